package transport

import (
	"strconv"
	"sync"

	"github.com/sandpool/sandpool/actors"
)

// unconfirmed holds the replayable events written to one client until the
// client confirms them. A written frame may still be lost: the socket
// accepts it into the kernel's buffer, then the peer vanishes (a dead
// network path, a frozen proxy). So after each batch the writer sends a
// ping naming it; frames arrive in order and a client answers a ping only
// after reading what came before it, so its pong confirms every batch up
// to the one named. Unsent gives back what is still unconfirmed, for the
// sandbox to replay after a reconnect; the events' Offset lets a client
// skip what it had read just before it vanished.
//
// At most one confirmation ping is outstanding: when its pong arrives and
// more was written meanwhile, another ping goes out. The writer goroutine
// calls written and pingFor; the reader goroutine calls confirm.
type unconfirmed struct {
	mu      sync.Mutex
	events  []heldEvent
	batch   uint64 // the last batch written with replayable events
	pinged  uint64 // the batch named by the outstanding ping, 0 if none
	taken   bool   // drained: hold nothing more
	wantAck chan struct{}
	// keep selects the events to hold (actors.Event.Replayable).
	keep func(actors.Event) bool
}

type heldEvent struct {
	batch uint64
	ev    actors.Event
}

func newUnconfirmed() *unconfirmed {
	return &unconfirmed{wantAck: make(chan struct{}, 1), keep: actors.Event.Replayable}
}

// written records events just written, in order: the replayable ones are
// held, the others released.
func (u *unconfirmed) written(events []actors.Event) {
	u.mu.Lock()
	defer u.mu.Unlock()
	next := u.batch + 1
	held := false
	for _, ev := range events {
		if !u.keep(ev) || u.taken {
			ev.Release()
			continue
		}
		u.events = append(u.events, heldEvent{batch: next, ev: ev})
		held = true
	}
	if held {
		u.batch = next
		u.askLocked()
	}
}

// askLocked wakes the writer for a ping unless one is outstanding.
func (u *unconfirmed) askLocked() {
	if u.pinged == 0 && u.batch > 0 && len(u.events) > 0 {
		select {
		case u.wantAck <- struct{}{}:
		default:
		}
	}
}

// pingFor returns the payload of the confirmation ping to send now, or
// false when none is needed.
func (u *unconfirmed) pingFor() (string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pinged != 0 || len(u.events) == 0 {
		return "", false
	}
	u.pinged = u.batch
	return strconv.FormatUint(u.batch, 10), true
}

// confirm handles a pong's payload: every batch up to the one it names is
// with the client. Keepalive pongs (empty payload) confirm nothing.
func (u *unconfirmed) confirm(payload string) {
	n, err := strconv.ParseUint(payload, 10, 64)
	if err != nil || n == 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	i := 0
	for ; i < len(u.events) && u.events[i].batch <= n; i++ {
		u.events[i].ev.Release()
	}
	u.events = u.events[i:]
	if n >= u.pinged {
		u.pinged = 0
		u.askLocked()
	}
}

// take returns the unconfirmed events, oldest first, and holds nothing
// more.
func (u *unconfirmed) take() []actors.Event {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.taken = true
	events := make([]actors.Event, len(u.events))
	for i, h := range u.events {
		events[i] = h.ev
	}
	u.events = nil
	return events
}
