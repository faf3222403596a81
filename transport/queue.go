package transport

import (
	"slices"
	"sync"

	"github.com/sandpool/sandpool/actors"
)

// eventQueue is a Sink with a bounded queue. Send never blocks: output is
// already bounded by the actor's flow window, so a full queue means a client
// that stopped reading, and overflow is called once. Memory grows with what
// is queued, not with the bound: an idle connection costs almost nothing.
type eventQueue struct {
	mu       sync.Mutex
	events   []actors.Event
	limit    int
	closed   bool
	overflow func()
	// ready holds a token while events are queued.
	ready chan struct{}
}

func newEventQueue(limit int, overflow func()) *eventQueue {
	return &eventQueue{limit: limit, overflow: overflow, ready: make(chan struct{}, 1)}
}

func (q *eventQueue) Send(ev actors.Event) {
	q.mu.Lock()
	if q.closed || len(q.events) >= q.limit {
		full := !q.closed
		q.closed = q.closed || full
		q.mu.Unlock()
		ev.Release()
		if full && q.overflow != nil {
			q.overflow()
		}
		return
	}
	q.events = append(q.events, ev)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default: // a token is already there
	}
}

// take returns everything queued, in order, once ready has fired.
func (q *eventQueue) take() []actors.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	events := q.events
	q.events = nil
	return events
}

// requeue puts events a failed write took back at the head of the queue.
func (q *eventQueue) requeue(events []actors.Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		releaseAll(events)
		return
	}
	q.events = append(slices.Clone(events), q.events...)
}

// drain returns what is queued and takes nothing more.
func (q *eventQueue) drain() []actors.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	events := q.events
	q.events = nil
	return events
}

// close drops what is queued and everything sent later.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	events := q.events
	q.events = nil
	q.mu.Unlock()
	releaseAll(events)
}
