package transport

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/actors"
)

func out(data string) actors.Event { return actors.Event{Kind: actors.EventStdout, Data: data} }

func newTestUnconfirmed() *unconfirmed {
	u := newUnconfirmed()
	u.keep = func(ev actors.Event) bool { return ev.Kind == actors.EventStdout }
	return u
}

func datas(events []actors.Event) []string {
	var d []string
	for _, ev := range events {
		d = append(d, ev.Data)
	}
	return d
}

// wantsPing reports whether the writer was woken for a confirmation ping.
func wantsPing(u *unconfirmed) bool {
	select {
	case <-u.wantAck:
		return true
	default:
		return false
	}
}

func TestUnconfirmedHoldsWrittenOutputUntilAPongNamesItsBatch(t *testing.T) {
	u := newTestUnconfirmed()
	u.written([]actors.Event{out("a"), {Kind: actors.EventStatus, Status: actors.StatusRunning}})
	require.True(t, wantsPing(u))
	payload, ok := u.pingFor()
	require.True(t, ok)
	assert.Equal(t, "1", payload)

	// Written while the first ping is out: no second ping yet.
	u.written([]actors.Event{out("b")})
	u.written([]actors.Event{out("c")})
	assert.False(t, wantsPing(u))
	_, ok = u.pingFor()
	assert.False(t, ok, "one confirmation ping at a time")

	u.confirm("")    // a keepalive pong confirms nothing
	u.confirm("bad") // nor does a pong of another client's making
	assert.Len(t, u.events, 3)

	u.confirm("1")
	assert.Equal(t, []string{"b", "c"}, datas(eventsOf(u)))
	require.True(t, wantsPing(u), "more was written meanwhile: ask again")
	payload, ok = u.pingFor()
	require.True(t, ok)
	assert.Equal(t, "3", payload)

	u.written([]actors.Event{out("d")})
	assert.Equal(t, []string{"b", "c", "d"}, datas(u.take()), "the unconfirmed ones, oldest first")
	u.written([]actors.Event{out("e")})
	assert.Empty(t, u.take(), "nothing is held once drained")
}

func TestUnconfirmedNeedsNoPingForEventsItDoesNotHold(t *testing.T) {
	u := newTestUnconfirmed()
	u.written([]actors.Event{{Kind: actors.EventStatus, Status: actors.StatusRunning}})
	assert.False(t, wantsPing(u))
	_, ok := u.pingFor()
	assert.False(t, ok)
	assert.Empty(t, u.take())
}

func eventsOf(u *unconfirmed) []actors.Event {
	u.mu.Lock()
	defer u.mu.Unlock()
	var events []actors.Event
	for _, h := range u.events {
		events = append(events, h.ev)
	}
	return events
}
