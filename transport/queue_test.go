package transport

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sandpool/sandpool/actors"
)

func TestEventQueue(t *testing.T) {
	overflows := 0
	q := newEventQueue(2, func() { overflows++ })
	q.Send(actors.Event{Data: "a"})
	q.Send(actors.Event{Data: "b"})
	select {
	case <-q.ready:
	default:
		t.Fatal("no ready token with events queued")
	}
	q.Send(actors.Event{Data: "c"}) // over the limit: the client is gone for good
	q.Send(actors.Event{Data: "d"})
	assert.Equal(t, 1, overflows, "overflow is reported once")

	got := q.take()
	assert.Len(t, got, 2)
	assert.Equal(t, "a", got[0].Data)
	assert.Equal(t, "b", got[1].Data)
	assert.Empty(t, q.take())
	q.close()
	q.Send(actors.Event{Data: "e"})
	assert.Empty(t, q.take(), "nothing is queued after close")
}
