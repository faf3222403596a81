package transport

import (
	"sync"

	"github.com/sandpool/sandpool/actors"
)

// eventQueue is a Sink with a bounded queue. Send never blocks: output is
// already bounded by the actor's flow window, so a full queue means a
// client that stopped reading, and overflow is called once.
type eventQueue struct {
	ch       chan actors.Event
	mu       sync.Mutex
	closed   bool
	overflow func()
}

func newEventQueue(size int, overflow func()) *eventQueue {
	return &eventQueue{ch: make(chan actors.Event, size), overflow: overflow}
}

func (q *eventQueue) Send(ev actors.Event) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		ev.Release()
		return
	}
	select {
	case q.ch <- ev:
		q.mu.Unlock()
	default:
		q.mu.Unlock()
		ev.Release()
		if q.overflow != nil {
			q.overflow()
		}
	}
}

// close drops what is queued and everything sent later.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	for {
		select {
		case ev := <-q.ch:
			ev.Release()
		default:
			return
		}
	}
}
