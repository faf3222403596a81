package actors

import (
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/runsc"
)

// stepHandler writes every string sent on steps to stdout and exits once
// steps is closed, so a test decides when each piece of output exists.
func stepHandler(steps <-chan string) func(runsc.FakeExec) int {
	return func(e runsc.FakeExec) int {
		for s := range steps {
			if _, err := io.WriteString(e.Stdout, s); err != nil {
				return 1
			}
		}
		return 0
	}
}

// startStepping starts a sandbox running one execution whose output the
// test writes through the returned channel (closing it ends the execution).
func startStepping(t *testing.T, opts ...func(*Config)) (*harness, chan<- string) {
	t.Helper()
	rt := runsc.NewFake()
	steps := make(chan string)
	rt.Handler = stepHandler(steps)
	h, err := start(t, rt, Settings{}, opts...)
	require.NoError(t, err)
	h.ref.Send(Execute{Language: "bash", Code: "x", HasCode: true})
	assert.Equal(t, StatusExecRunning, h.sink.next(t).Status)
	return h, steps
}

// attach sends an Attach and returns the sandbox's answer.
func (h *harness) attach(t *testing.T, sink Sink, token string, replace Sink) AttachResult {
	t.Helper()
	return attachTo(t, h.ref, sink, token, replace)
}

func attachTo(t *testing.T, ref *Ref, sink Sink, token string, replace Sink) AttachResult {
	t.Helper()
	reply := make(chan AttachResult, 1)
	ref.Send(Attach{Sink: sink, Token: token, Replace: replace, Reply: reply})
	select {
	case res := <-reply:
		return res
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to Attach")
		return AttachResult{}
	}
}

// detach sends a Detach and waits until the sandbox took the sink's
// undelivered events.
func (h *harness) detach(t *testing.T, sink Sink) {
	t.Helper()
	done := make(chan struct{})
	h.ref.Send(Detach{Sink: sink, Done: done})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Detach not acknowledged")
	}
}

func TestAttachChecks(t *testing.T) {
	h := mustStart(t, Settings{})
	other := newRecorder()

	res := h.attach(t, other, "", nil)
	assert.ErrorIs(t, res.Err, ErrInvalidToken, "empty token")
	res = h.attach(t, other, strings.Repeat("0", 64), nil)
	assert.ErrorIs(t, res.Err, ErrInvalidToken, "wrong token")
	res = h.attach(t, other, h.ref.Token, nil)
	assert.ErrorIs(t, res.Err, ErrInUse, "the first client is still attached")
	assert.Equal(t, Sink(h.sink), res.Current)
	assert.False(t, res.Handoff)

	// None of this touched the attached client: it still gets its events.
	h.sink.quiet(t)
	h.ref.Send(Execute{Language: "bash", Code: "still mine", HasCode: true})
	_, stdout, _, _ := h.sink.until(t, StatusExecDone)
	assert.Equal(t, "still mine", stdout)

	// A dead client is replaced by a valid attach that names it.
	res = h.attach(t, other, h.ref.Token, h.sink)
	require.NoError(t, res.Err)
	assert.Equal(t, StatusRunning, other.next(t).Status)
	h.ref.Send(Execute{Language: "bash", Code: "now yours", HasCode: true})
	_, stdout, _, _ = other.until(t, StatusExecDone)
	assert.Equal(t, "now yours", stdout)
	h.sink.quiet(t)
}

func TestAttachAfterDetach(t *testing.T) {
	h := mustStart(t, Settings{})
	h.detach(t, h.sink)
	second := newRecorder()
	require.NoError(t, h.attach(t, second, h.ref.Token, nil).Err)
	assert.Equal(t, StatusRunning, second.next(t).Status)
	// Nothing was running: a reconnect has nothing to say.
	h.ref.Send(Reconnect{})
	second.quiet(t)
}

func TestWarmSandboxCannotBeAttached(t *testing.T) {
	h := startWarm(t, runsc.NewFake(), time.Hour)
	res := attachTo(t, h.ref, newRecorder(), h.ref.Token, nil)
	assert.ErrorIs(t, res.Err, ErrNotAttachable, "a warm sandbox's token was never given out")
}

func TestReconnectReplaysWhatTheClientMissed(t *testing.T) {
	h, steps := startStepping(t)
	steps <- "one\n"
	assert.Equal(t, "one\n", h.sink.next(t).Data)

	h.detach(t, h.sink)
	steps <- "two\n"
	steps <- "three\n"
	second := newRecorder()
	require.NoError(t, h.attach(t, second, h.ref.Token, nil).Err)
	assert.Equal(t, StatusRunning, second.next(t).Status)
	steps <- "four\n" // attached, not yet resumed: still kept
	second.quiet(t)

	h.ref.Send(Reconnect{})
	running := second.next(t)
	assert.Equal(t, StatusExecRunning, running.Status)
	assert.Zero(t, running.DroppedBytes)
	kept := second.next(t)
	assert.Equal(t, "two\nthree\nfour\n", kept.Data, "kept output comes merged")
	assert.Equal(t, int64(len("one\n")), kept.Offset, "where it starts in the stream")
	steps <- "five\n"
	close(steps)
	live := second.next(t)
	assert.Equal(t, "five\n", live.Data)
	assert.Equal(t, int64(len("one\ntwo\nthree\nfour\n")), live.Offset)
	assert.Equal(t, StatusExecDone, second.next(t).Status)
	h.sink.quiet(t)
}

// TestOutputOffsetsCountEachStream: every chunk says where it starts in
// its own stream, stdout and stderr apart, from 0 in each execution.
func TestOutputOffsetsCountEachStream(t *testing.T) {
	rt := runsc.NewFake()
	rt.Handler = func(e runsc.FakeExec) int {
		for i := range 50 {
			_, _ = io.WriteString(e.Stdout, strings.Repeat("o", i+1))
			_, _ = io.WriteString(e.Stderr, strings.Repeat("é", i+1)) // 2 bytes each
		}
		return 0
	}
	h, err := start(t, rt, Settings{})
	require.NoError(t, err)
	for range 2 {
		h.ref.Send(Execute{Language: "bash", Code: "x", HasCode: true})
		var written [2]int64
		for {
			ev := h.sink.next(t)
			if ev.Kind == EventStatus {
				if ev.Status == StatusExecDone {
					break
				}
				continue
			}
			i := 0
			if ev.Kind == EventStderr {
				i = 1
			}
			require.Equal(t, written[i], ev.Offset, "%s chunk %q", ev.Kind, ev.Data)
			written[i] += int64(len(ev.Data))
		}
		assert.Equal(t, [2]int64{50 * 51 / 2, 2 * 50 * 51 / 2}, written, "bytes per stream")
	}
}

func TestReconnectAfterTheExecutionEnded(t *testing.T) {
	h, steps := startStepping(t)
	h.detach(t, h.sink)
	steps <- "late\n"
	close(steps)

	second := newRecorder()
	require.Eventually(t, func() bool {
		// The end is kept too: attach once the execution is over.
		res := h.attach(t, second, h.ref.Token, nil)
		if res.Err != nil {
			return false
		}
		return second.next(t).Status == StatusRunning
	}, 5*time.Second, 10*time.Millisecond)
	h.ref.Send(Reconnect{})
	statuses, stdout, _, done := second.until(t, StatusExecDone)
	assert.Equal(t, []string{StatusExecRunning, StatusExecDone}, statuses)
	assert.Equal(t, "late\n", stdout)
	require.NotNil(t, done.ExitCode)
	assert.Equal(t, 0, *done.ExitCode)
	// Replayed once only.
	h.ref.Send(Reconnect{})
	second.quiet(t)
}

func TestReplayBufferDropsTheOldestOutput(t *testing.T) {
	const limit, chunk, chunks = 16 << 10, 1000, 100
	h, steps := startStepping(t, func(c *Config) { c.ReplayBuffer = limit })
	h.detach(t, h.sink)
	var all strings.Builder
	for i := 0; i < chunks; i++ {
		piece := strings.Repeat(string(rune('a'+i%26)), chunk)
		all.WriteString(piece)
		steps <- piece
	}
	close(steps)

	second := newRecorder()
	require.Eventually(t, func() bool { return h.attach(t, second, h.ref.Token, nil).Err == nil }, 5*time.Second, 10*time.Millisecond)
	second.until(t, StatusRunning)
	h.ref.Send(Reconnect{})
	running := second.next(t)
	require.Equal(t, StatusExecRunning, running.Status)
	_, stdout, _, _ := second.until(t, StatusExecDone)
	assert.Positive(t, running.DroppedBytes)
	assert.Equal(t, int64(chunk*chunks), running.DroppedBytes+int64(len(stdout)), "kept + dropped is everything")
	assert.LessOrEqual(t, len(stdout), limit)
	assert.True(t, strings.HasSuffix(all.String(), stdout), "the newest output is kept")
}

// drainSink is a client that accepted events it never delivered.
type drainSink struct {
	mu     sync.Mutex
	unsent []Event
}

func (d *drainSink) Send(ev Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.unsent = append(d.unsent, ev)
}

func (d *drainSink) Unsent() []Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.unsent
}

func (d *drainSink) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.unsent)
}

func TestUndeliveredEventsAreReplayed(t *testing.T) {
	rt := runsc.NewFake()
	steps := make(chan string)
	rt.Handler = stepHandler(steps)
	sink := &drainSink{}
	h, err := start(t, rt, Settings{}, func(c *Config) { c.Sink = sink })
	require.NoError(t, err)
	h.ref.Send(Execute{Language: "bash", Code: "x", HasCode: true})
	steps <- "queued but never written\n"
	require.Eventually(t, func() bool {
		ack := make(chan struct{})
		h.ref.Send(Detach{Done: ack}) // a no-op that orders us behind the output
		<-ack
		return sink.count() == 2
	}, 5*time.Second, 10*time.Millisecond)
	h.detach(t, sink)
	close(steps)

	second := newRecorder()
	require.Eventually(t, func() bool { return h.attach(t, second, h.ref.Token, nil).Err == nil }, 5*time.Second, 10*time.Millisecond)
	second.until(t, StatusRunning)
	h.ref.Send(Reconnect{})
	statuses, stdout, _, _ := second.until(t, StatusExecDone)
	assert.Equal(t, []string{StatusExecRunning, StatusExecDone}, statuses, "RUNNING once, from the reconnect")
	assert.Equal(t, "queued but never written\n", stdout)
}
