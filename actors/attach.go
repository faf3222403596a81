package actors

import (
	"slices"

	"github.com/sandpool/sandpool/pool/checkpoints"
)

// Attach, detach and reconnect. A client may drop at any time; the sandbox
// lives on, and the output of a running execution waits for the client to
// come back (bounded, oldest dropped first) instead of being lost.

func (s *Sandbox) onAttach(msg Attach) {
	res := s.attach(msg)
	if msg.Reply != nil {
		msg.Reply <- res
	}
}

func (s *Sandbox) attach(msg Attach) AttachResult {
	switch s.state {
	case StateClaimed, StateExecuting:
	case StateCheckpointing:
		if !s.tokenMatches(msg.Token) {
			return AttachResult{Err: ErrInvalidToken}
		}
		return AttachResult{Err: ErrInUse}
	default:
		// Never claimed (warm) or going away: no client can own it.
		return AttachResult{Err: ErrNotAttachable}
	}
	if !s.tokenMatches(msg.Token) {
		return AttachResult{Err: ErrInvalidToken}
	}
	if s.sink != nil && s.sink != msg.Sink {
		if msg.Replace == nil || msg.Replace != s.sink {
			return AttachResult{Err: ErrInUse, Current: s.sink, Handoff: s.handoffAllowed()}
		}
		s.log.Info().Msg("attach replaces a dead connection")
		s.detachSink()
	}
	s.sink = msg.Sink
	s.touch()
	if s.state == StateClaimed {
		s.armIdle()
	}
	s.emit(statusEvent(StatusRunning))
	s.log.Info().Msg("client attached")
	return AttachResult{}
}

// tokenMatches compares in constant time (through the hash: a restored
// sandbox knows only that).
func (s *Sandbox) tokenMatches(token string) bool {
	return checkpoints.Meta{TokenHash: s.cfg.TokenHash}.TokenMatches(token)
}

func (s *Sandbox) onDetach(msg Detach) {
	if msg.Sink != nil && s.sink == msg.Sink {
		s.detachSink()
	}
	if msg.Done != nil {
		close(msg.Done)
	}
}

// detachSink forgets the client and keeps what it did not deliver of the
// current (or last) execution for a reconnect.
func (s *Sandbox) detachSink() {
	sink := s.sink
	s.sink = nil
	var unsent []Event
	if d, ok := sink.(Drainer); ok {
		unsent = d.Unsent()
	}
	e := s.exec
	if e == nil && s.seq > 0 && containsSeq(unsent, s.seq) {
		// It ended, but the client missed its end.
		e = &execution{seq: s.seq}
		s.parked = e
	}
	if e != nil {
		s.detachExec(e)
	}
	for _, ev := range unsent {
		if e != nil && ev.seq == e.seq && ev.Status != StatusExecRunning {
			e.replay.add(ev)
		} else {
			ev.Release()
		}
	}
}

func containsSeq(events []Event, seq int) bool {
	for _, ev := range events {
		if ev.seq == seq {
			return true
		}
	}
	return false
}

// onReconnect replays a detached execution: RUNNING (with what was
// dropped), the output kept, then live output, or its DONE if it ended.
// With nothing to resume it sends nothing.
func (s *Sandbox) onReconnect() {
	e := s.exec
	if e == nil || !e.detached {
		e = s.parked
	}
	if e == nil || !e.detached || s.sink == nil {
		return
	}
	running := statusEvent(StatusExecRunning)
	running.DroppedBytes = e.replay.dropped
	s.emit(running)
	s.emit(e.replay.take()...)
	e.detached = false
	if e == s.parked {
		s.parked = nil
	}
	s.log.Info().Int64("dropped_bytes", running.DroppedBytes).Msg("execution resumed")
}

// emitExec sends an event of execution e, or keeps it for a reconnect
// while e has no client.
func (s *Sandbox) emitExec(e *execution, ev Event) {
	ev.seq = e.seq
	if e.detached || s.sink == nil {
		s.detachExec(e)
		e.replay.add(ev)
		return
	}
	s.emit(ev)
}

// detachExec starts keeping e's events for a reconnect (once).
func (s *Sandbox) detachExec(e *execution) {
	if !e.detached {
		e.detached = true
		e.replay = newReplayBuffer(s.cfg.ReplayBuffer)
	}
}

// replayBuffer keeps an execution's events while no client is attached.
// Consecutive chunks of one stream are merged (up to mergeLimit), and each
// kept event costs eventCost on top of its bytes, so a program writing one
// byte at a time cannot make it hold millions of events. Beyond the limit
// the oldest output is dropped and counted; status events (FORCE_KILLED,
// DONE) are never dropped.
type replayBuffer struct {
	events  []Event
	cost    int
	limit   int
	merge   int
	dropped int64
}

// mergeLimit caps a merged chunk, so a drop loses a bounded piece.
const mergeLimit = 64 << 10

func newReplayBuffer(limit int) replayBuffer {
	return replayBuffer{limit: limit, merge: min(mergeLimit, limit/8)}
}

func isOutput(ev Event) bool { return ev.Kind == EventStdout || ev.Kind == EventStderr }

// add keeps ev; its flow-window credit is returned at once, so a process
// with no client never blocks on its output.
func (b *replayBuffer) add(ev Event) {
	ev.Release()
	ev.credit = nil
	if n := len(b.events); n > 0 && isOutput(ev) && b.events[n-1].Kind == ev.Kind && len(b.events[n-1].Data)+len(ev.Data) <= b.merge {
		b.events[n-1].Data += ev.Data
		b.cost += len(ev.Data)
	} else {
		b.events = append(b.events, ev)
		b.cost += len(ev.Data) + eventCost
	}
	for i := 0; b.cost > b.limit && i < len(b.events); {
		if !isOutput(b.events[i]) {
			i++
			continue
		}
		b.cost -= len(b.events[i].Data) + eventCost
		b.dropped += int64(len(b.events[i].Data))
		b.events = slices.Delete(b.events, i, i+1)
	}
}

// take returns the kept events and empties the buffer.
func (b *replayBuffer) take() []Event {
	events := b.events
	b.events, b.cost = nil, 0
	return events
}
