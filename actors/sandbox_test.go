package actors

import (
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/runsc"
)

// recorder is a Sink that keeps every event and releases output at once.
type recorder struct {
	ch   chan Event
	hold bool // keep credits instead of releasing them (a slow client)

	mu   sync.Mutex
	held []Event
}

func newRecorder() *recorder { return &recorder{ch: make(chan Event, 10000)} }

func (r *recorder) Send(ev Event) {
	r.mu.Lock()
	if r.hold {
		r.held = append(r.held, ev)
	} else {
		ev.Release()
	}
	r.mu.Unlock()
	r.ch <- ev
}

func (r *recorder) releaseHeld() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.held {
		ev.Release()
	}
	r.held = nil
	r.hold = false
}

// next returns the next event or fails after a bounded wait.
func (r *recorder) next(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-r.ch:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
		return Event{}
	}
}

// statuses reads events until want (inclusive) and returns the statuses
// seen, with output collected separately.
func (r *recorder) until(t *testing.T, want string) (statuses []string, stdout, stderr string, last Event) {
	t.Helper()
	for {
		ev := r.next(t)
		switch ev.Kind {
		case EventStdout:
			stdout += ev.Data
		case EventStderr:
			stderr += ev.Data
		case EventStatus:
			statuses = append(statuses, ev.Status)
			if ev.Status == want {
				return statuses, stdout, stderr, ev
			}
		}
	}
}

// quiet asserts nothing more arrives for a short while.
func (r *recorder) quiet(t *testing.T) {
	t.Helper()
	select {
	case ev := <-r.ch:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
}

// syncBuffer collects an actor's log lines for inspection.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type harness struct {
	rt   *runsc.Fake
	sink *recorder
	ref  *Ref
	sb   *Sandbox
}

func start(t *testing.T, rt *runsc.Fake, settings Settings, opts ...func(*Config)) (*harness, error) {
	t.Helper()
	system := actor.NewActorSystem()
	sink := newRecorder()
	created := make(chan error, 1)
	logs := &syncBuffer{}
	cfg := Config{ID: NewID(), Token: NewToken(), Runtime: rt, Settings: settings, Sink: sink, Created: created, Logger: zerolog.New(logs)}
	for _, o := range opts {
		o(&cfg)
	}
	sb := New(cfg)
	pid := system.Root.Spawn(sb.Props())
	h := &harness{rt: rt, sink: sink, sb: sb, ref: &Ref{ID: cfg.ID, Token: cfg.Token, PID: pid, Root: system.Root}}
	t.Cleanup(func() {
		_ = system.Root.StopFuture(pid).Wait()
		assert.Empty(t, rt.Live(), "a sandbox outlived its actor")
		// Every flow must stay inside the transition table.
		assert.NotContains(t, logs.String(), "illegal sandbox transition")
	})
	select {
	case err := <-created:
		return h, err
	case <-time.After(5 * time.Second):
		t.Fatal("creation never finished")
		return nil, nil
	}
}

func mustStart(t *testing.T, settings Settings, opts ...func(*Config)) *harness {
	t.Helper()
	h, err := start(t, runsc.NewFake(), settings, opts...)
	require.NoError(t, err)
	return h
}

func TestExecuteStreamsOutputAndExitCode(t *testing.T) {
	tests := []struct {
		name       string
		language   string
		code       string
		wantStdout string
		wantStderr string
		wantCode   int
	}{
		{"python output", "python", "print('hi')", "print('hi')", "", 0},
		{"bash output", "bash", "echo hi", "echo hi", "", 0},
		{"stderr", "python", "stderr oops", "", "oops", 0},
		{"exit code", "bash", "exit 3", "", "", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := mustStart(t, Settings{})
			h.ref.Send(Execute{Language: tt.language, Code: tt.code, HasCode: true})
			statuses, stdout, stderr, done := h.sink.until(t, StatusExecDone)
			assert.Equal(t, []string{StatusExecRunning, StatusExecDone}, statuses)
			assert.Equal(t, tt.wantStdout, stdout)
			assert.Equal(t, tt.wantStderr, stderr)
			require.NotNil(t, done.ExitCode)
			assert.Equal(t, tt.wantCode, *done.ExitCode)
		})
	}
}

func TestLanguagesRunTheirInterpreter(t *testing.T) {
	rt := runsc.NewFake()
	var mu sync.Mutex
	var argv [][]string
	rt.Handler = func(e runsc.FakeExec) int {
		mu.Lock()
		argv = append(argv, e.Spec.Args)
		mu.Unlock()
		return 0
	}
	h, err := start(t, rt, Settings{})
	require.NoError(t, err)
	for _, lang := range []string{"python", "bash"} {
		h.ref.Send(Execute{Language: lang, Code: "X", HasCode: true})
		h.sink.until(t, StatusExecDone)
	}
	assert.Equal(t, [][]string{{"python3", "-c", "X"}, {"bash", "-c", "X"}}, argv)
}

func TestBadExecuteRequests(t *testing.T) {
	tests := []struct {
		name    string
		msg     Execute
		status  string
		message string
		done    bool
	}{
		{"unsupported language", Execute{Language: "ruby", Code: "x", HasCode: true}, StatusUnsupportedLang,
			"Unsupported language: 'ruby'. Supported languages are: python, bash", true},
		{"missing language", Execute{Code: "x", HasCode: true}, StatusUnsupportedLang,
			"Unsupported language: ''. Supported languages are: python, bash", true},
		{"missing code", Execute{Language: "python"}, StatusExecError, "The execute request has no code.", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := mustStart(t, Settings{})
			h.ref.Send(tt.msg)
			ev := h.sink.next(t)
			assert.Equal(t, tt.status, ev.Status)
			assert.Equal(t, tt.message, ev.Message)
			errEv := h.sink.next(t)
			assert.Equal(t, EventError, errEv.Kind)
			assert.Equal(t, tt.message, errEv.Message)
			if tt.done {
				assert.Equal(t, StatusExecDone, h.sink.next(t).Status)
			}
			h.sink.quiet(t)
			// The sandbox still works.
			h.ref.Send(Execute{Language: "python", Code: "ok", HasCode: true})
			_, stdout, _, _ := h.sink.until(t, StatusExecDone)
			assert.Equal(t, "ok", stdout)
		})
	}
}

func TestSecondExecuteWhileRunningIsRefused(t *testing.T) {
	h := mustStart(t, Settings{})
	h.ref.Send(Execute{Language: "bash", Code: "cat", HasCode: true})
	assert.Equal(t, StatusExecRunning, h.sink.next(t).Status)

	h.ref.Send(Execute{Language: "bash", Code: "echo second", HasCode: true})
	ev := h.sink.next(t)
	assert.Equal(t, StatusExecError, ev.Status)
	assert.Equal(t, "An execution is already in progress.", ev.Message)
	assert.Equal(t, EventError, h.sink.next(t).Kind)

	// The first one continues.
	h.ref.Send(Stdin{Data: "first\n"})
	h.ref.Send(CloseStdin{})
	_, stdout, _, done := h.sink.until(t, StatusExecDone)
	assert.Equal(t, "first\n", stdout)
	assert.Equal(t, 0, *done.ExitCode)
}

func TestStdin(t *testing.T) {
	h := mustStart(t, Settings{})
	h.ref.Send(Stdin{Data: "nobody"})
	ev := h.sink.next(t)
	assert.Equal(t, StatusExecError, ev.Status, "stdin without an execution")
	assert.NotEmpty(t, ev.Message)
	assert.Equal(t, EventError, h.sink.next(t).Kind)

	h.ref.Send(Execute{Language: "bash", Code: "cat", HasCode: true})
	// Sent before the process may have started: queued, not lost.
	h.ref.Send(Stdin{Data: "a"})
	h.ref.Send(Stdin{Data: "b\n"})
	h.ref.Send(CloseStdin{})
	_, stdout, _, done := h.sink.until(t, StatusExecDone)
	assert.Equal(t, "ab\n", stdout)
	assert.Equal(t, 0, *done.ExitCode)
}

func TestKillProcess(t *testing.T) {
	h := mustStart(t, Settings{})
	h.ref.Send(KillProcess{})
	assert.Equal(t, StatusForceKilled, h.sink.next(t).Status, "nothing running: just FORCE_KILLED")
	h.sink.quiet(t)

	h.ref.Send(Execute{Language: "bash", Code: "sleep", HasCode: true})
	assert.Equal(t, StatusExecRunning, h.sink.next(t).Status)
	h.ref.Send(KillProcess{})
	statuses, _, _, done := h.sink.until(t, StatusExecDone)
	assert.Equal(t, []string{StatusForceKilled, StatusExecDone}, statuses)
	assert.Equal(t, 137, *done.ExitCode)
	assert.Equal(t, ReasonKilled, done.Reason)
}

func TestKillProcessBeforeItStarted(t *testing.T) {
	h := mustStart(t, Settings{})
	h.ref.Send(Execute{Language: "bash", Code: "sleep", HasCode: true})
	h.ref.Send(KillProcess{}) // may arrive before execStarted
	statuses, _, _, done := h.sink.until(t, StatusExecDone)
	assert.Equal(t, []string{StatusExecRunning, StatusForceKilled, StatusExecDone}, statuses)
	assert.Equal(t, ReasonKilled, done.Reason)
}

func TestExecutionTimeout(t *testing.T) {
	tests := []struct {
		name      string
		execDelay time.Duration
	}{
		{"while running", 0},
		// The timeout fires while `runsc exec` is still starting: it
		// must not be forgotten.
		{"before the process started", 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := runsc.NewFake()
			rt.ExecDelay = tt.execDelay
			h, err := start(t, rt, Settings{})
			require.NoError(t, err)
			h.ref.Send(Execute{Language: "bash", Code: "sleep", HasCode: true, Timeout: 50 * time.Millisecond})
			statuses, _, _, done := h.sink.until(t, StatusExecDone)
			assert.Equal(t, []string{StatusExecRunning, StatusExecDone}, statuses)
			assert.Equal(t, ReasonTimeout, done.Reason)
			assert.Equal(t, 137, *done.ExitCode)
		})
	}
}

func TestKillSandbox(t *testing.T) {
	tests := []struct {
		name     string
		running  bool
		expected []string
	}{
		{"idle", false, []string{StatusKilling, StatusDeleting, StatusDeleted, StatusKilled}},
		{"while executing", true, []string{StatusKilling, StatusDeleting, StatusExecDone, StatusDeleted, StatusKilled}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := mustStart(t, Settings{})
			if tt.running {
				h.ref.Send(Execute{Language: "bash", Code: "sleep", HasCode: true})
				require.Equal(t, StatusExecRunning, h.sink.next(t).Status)
			}
			h.ref.Send(KillSandbox{})
			var statuses []string
			var last Event
			for !last.Gone {
				last = h.sink.next(t)
				if last.Kind == EventStatus {
					statuses = append(statuses, last.Status)
				}
				if last.Status == StatusExecDone {
					require.NotNil(t, last.ExitCode)
					assert.Equal(t, 137, *last.ExitCode, "killed with its sandbox")
					assert.Equal(t, ReasonSandboxDeleted, last.Reason)
				}
			}
			assert.Equal(t, tt.expected, statuses)
			assert.Equal(t, CloseNormal, last.CloseCode)
			assert.Empty(t, h.rt.Live())
			assert.Contains(t, h.rt.Calls(), "destroy "+h.ref.ID)
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	h := mustStart(t, Settings{IdleTimeout: 150 * time.Millisecond})
	// A running execution is never reaped, however long it runs.
	h.ref.Send(Execute{Language: "bash", Code: "cat", HasCode: true})
	assert.Equal(t, StatusExecRunning, h.sink.next(t).Status)
	select {
	case ev := <-h.sink.ch:
		t.Fatalf("reaped while executing: %+v", ev)
	case <-time.After(400 * time.Millisecond):
	}
	h.ref.Send(CloseStdin{})
	h.sink.until(t, StatusExecDone)

	start := time.Now()
	statuses, _, _, _ := h.sink.until(t, StatusDeleted)
	assert.Equal(t, []string{StatusDeleting, StatusDeleted}, statuses)
	assert.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond, "idle time counts from the end of the execution")
	assert.True(t, h.sink.next(t).Gone)
	require.Eventually(t, func() bool { return len(h.rt.Live()) == 0 }, 2*time.Second, 10*time.Millisecond)
}

func TestActivityPostponesIdleTimeout(t *testing.T) {
	// Activity every 150 ms for 1.2 s keeps a 600 ms timeout from firing.
	h := mustStart(t, Settings{IdleTimeout: 600 * time.Millisecond})
	for i := 0; i < 8; i++ {
		time.Sleep(150 * time.Millisecond) // the scenario: a client acting at intervals
		h.ref.Send(Execute{Language: "python", Code: "x", HasCode: true})
		h.sink.until(t, StatusExecDone)
	}
	assert.Len(t, h.rt.Live(), 1, "reaped despite activity")
	h.sink.until(t, StatusDeleted)
}

func TestKillWhileCreatingIsHonouredPromptly(t *testing.T) {
	rt := runsc.NewFake()
	rt.CreateDelay = time.Minute
	system := actor.NewActorSystem()
	created := make(chan error, 1)
	sb := New(Config{ID: NewID(), Token: NewToken(), Runtime: rt, Sink: newRecorder(), Created: created, Logger: zerolog.Nop()})
	pid := system.Root.Spawn(sb.Props())
	require.Eventually(t, func() bool { return len(rt.Calls()) > 0 }, time.Second, 5*time.Millisecond)

	system.Root.Send(pid, KillSandbox{})
	select {
	case err := <-created:
		assert.ErrorIs(t, err, ErrShuttingDown)
	case <-time.After(2 * time.Second):
		t.Fatal("kill during create not honoured within 2s")
	}
	require.Eventually(t, func() bool { return len(rt.Live()) == 0 }, 2*time.Second, 10*time.Millisecond)
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	rt := runsc.NewFake()
	rt.CreateErr = func(string) error { return errors.New("boom") }
	h, err := start(t, rt, Settings{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "boom")
	// Runtime.Create cleans up after itself; a second delete would only
	// cost a runsc call.
	assert.Equal(t, []string{"create " + h.ref.ID}, rt.Calls())
}

func TestDetachedOutputNeverBlocks(t *testing.T) {
	rt := runsc.NewFake()
	finished := make(chan struct{})
	rt.Handler = func(e runsc.FakeExec) int {
		defer close(finished)
		chunk := strings.Repeat("x", 1024)
		for i := 0; i < 1024; i++ { // 1 MiB through a 16 KiB window
			if _, err := io.WriteString(e.Stdout, chunk); err != nil {
				return 1
			}
		}
		return 0
	}
	h, err := start(t, rt, Settings{}, func(c *Config) { c.OutputWindow = 16 << 10 })
	require.NoError(t, err)
	h.ref.Send(Detach{Sink: h.sink})
	h.ref.Send(Execute{Language: "python", Code: "x", HasCode: true})
	// Nobody is attached: the output is kept for a reconnect (bounded),
	// never waits for a reader.
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("a detached execution blocked on its output")
	}
	require.NoError(t, h.attach(t, h.sink, h.ref.Token, nil).Err)
	h.ref.Send(KillSandbox{})
	h.sink.until(t, StatusKilled)
}

func TestSlowClientGetsBackPressure(t *testing.T) {
	const window = 8 << 10
	tests := []struct {
		name          string
		chunk, chunks int
	}{
		{"bytes bound the window", 1024, 64},
		// 4000 one-byte writes fit an 8 KiB byte budget; the per-chunk
		// cost must still stop them, or a slow client's queue floods.
		{"chunks bound the window", 1, 4000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := runsc.NewFake()
			wrote := make(chan struct{})
			rt.Handler = func(e runsc.FakeExec) int {
				defer close(wrote)
				for i := 0; i < tt.chunks; i++ {
					if _, err := io.WriteString(e.Stdout, strings.Repeat("y", tt.chunk)); err != nil {
						return 1
					}
				}
				return 0
			}
			h, err := start(t, rt, Settings{}, func(c *Config) { c.OutputWindow = window })
			require.NoError(t, err)
			h.sink.mu.Lock()
			h.sink.hold = true
			h.sink.mu.Unlock()
			h.ref.Send(Execute{Language: "python", Code: "x", HasCode: true})

			// The client holds everything it got: the writer must stall
			// at the window, not run ahead.
			received, events := 0, 0
			deadline := time.After(300 * time.Millisecond)
		collect:
			for {
				select {
				case ev := <-h.sink.ch:
					if ev.Kind == EventStdout {
						received += len(ev.Data)
						events++
					}
				case <-deadline:
					break collect
				}
			}
			assert.LessOrEqual(t, received, window+32<<10, "output ran past the flow window")
			assert.LessOrEqual(t, events, MaxOutputEvents(window), "more chunks in flight than the window allows")
			select {
			case <-wrote:
				t.Fatal("the process finished writing although the client read nothing")
			default:
			}
			h.sink.releaseHeld()
			_, stdout, _, _ := h.sink.until(t, StatusExecDone)
			assert.Equal(t, tt.chunk*tt.chunks, received+len(stdout))
		})
	}
}

func TestTransitions(t *testing.T) {
	tests := []struct {
		from, to State
		ok       bool
	}{
		{StateWarming, StateClaimed, true},
		{StateWarming, StateReady, true},
		{StateReady, StateClaimed, true},
		{StateClaimed, StateExecuting, true},
		{StateExecuting, StateClaimed, true},
		{StateExecuting, StateStopping, true},
		{StateStopping, StateStopped, true},
		{StateClaimed, StateReady, false}, // a used sandbox never returns to a pool
		{StateExecuting, StateReady, false},
		{StateStopped, StateClaimed, false},
		{StateStopping, StateExecuting, false},
	}
	for _, tt := range tests {
		t.Run(tt.from.String()+"->"+tt.to.String(), func(t *testing.T) {
			err := next(tt.from, tt.to)
			if tt.ok {
				assert.NoError(t, err)
				return
			}
			var te *TransitionError
			assert.ErrorAs(t, err, &te)
		})
	}
}
