package actors

import (
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/runsc"
)

// states records a sandbox's state changes through Config.OnState.
type states struct {
	mu  sync.Mutex
	log []string
	now State
}

func (s *states) observe(from, to State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, from.String()+">"+to.String())
	s.now = to
}

func (s *states) current() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

func (s *states) history() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

type warmHarness struct {
	rt     *runsc.Fake
	ref    *Ref
	states *states
}

// startWarm spawns a pool sandbox and waits until it is ready.
func startWarm(t *testing.T, rt *runsc.Fake, health time.Duration, opts ...func(*Config)) *warmHarness {
	t.Helper()
	system := actor.NewActorSystem()
	st := &states{now: StateNew}
	cfg := Config{ID: NewID(), Token: NewToken(), Runtime: rt, Logger: zerolog.Nop(),
		Warm: true, HealthInterval: health, OnState: st.observe}
	for _, o := range opts {
		o(&cfg)
	}
	pid := system.Root.Spawn(New(cfg).Props())
	t.Cleanup(func() {
		_ = system.Root.StopFuture(pid).Wait()
		assert.Empty(t, rt.Live(), "a sandbox outlived its actor")
		assert.Equal(t, StateStopped, st.current(), "every end is observed")
	})
	require.Eventually(t, func() bool { return st.current() == StateReady }, 5*time.Second, time.Millisecond)
	return &warmHarness{rt: rt, ref: &Ref{ID: cfg.ID, Token: cfg.Token, PID: pid, Root: system.Root}, states: st}
}

func (h *warmHarness) claim(t *testing.T, settings Settings, sink Sink) error {
	t.Helper()
	reply := make(chan error, 1)
	h.ref.Send(Claim{Settings: settings, Sink: sink, Reply: reply})
	select {
	case err := <-reply:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no claim reply within 5s")
		return nil
	}
}

func TestWarmSandboxIsClaimedWithTheClientsSettings(t *testing.T) {
	rt := runsc.NewFake()
	h := startWarm(t, rt, time.Hour)
	calls := len(rt.Calls())

	sink := newRecorder()
	require.NoError(t, h.claim(t, Settings{IdleTimeout: 200 * time.Millisecond}, sink))
	assert.Len(t, rt.Calls(), calls, "a claim makes no runtime call")
	assert.Equal(t, StateClaimed, h.states.current())

	// The client's idle timeout applies from the claim on.
	statuses, _, _, _ := sink.until(t, StatusDeleted)
	assert.Equal(t, []string{StatusDeleting, StatusDeleted}, statuses)
	require.Eventually(t, func() bool { return h.states.current() == StateStopped }, 5*time.Second, time.Millisecond)
	assert.Equal(t, []string{"new>warming", "warming>ready", "ready>claimed", "claimed>stopping", "stopping>stopped"}, h.states.history())
}

// Checkpoint flags are per request too: a warm sandbox serves a client that
// wants checkpoints.
func TestWarmSandboxClaimedForCheckpoints(t *testing.T) {
	rt := runsc.NewFake()
	store := newCheckpointStore(t)
	h := startWarm(t, rt, time.Hour, withCheckpoints(store))
	sink := newRecorder()
	require.NoError(t, h.claim(t, Settings{EnableCheckpoint: true, IdleTimeout: time.Minute}, sink))
	h.ref.Send(Checkpoint{})
	statuses, _, _, _ := sink.until(t, StatusCheckpointed)
	assert.Equal(t, []string{StatusCheckpointing, StatusDeleting, StatusDeleted, StatusCheckpointed}, statuses)
	meta, err := store.Load(h.ref.ID)
	require.NoError(t, err)
	assert.Equal(t, 60.0, meta.IdleTimeout)
}

func TestClaimedSandboxIsNotClaimedTwice(t *testing.T) {
	h := startWarm(t, runsc.NewFake(), time.Hour)
	require.NoError(t, h.claim(t, Settings{}, newRecorder()))
	assert.ErrorIs(t, h.claim(t, Settings{}, newRecorder()), ErrNotReady)
}

func TestRetireDestroysOnlyAReadySandbox(t *testing.T) {
	rt := runsc.NewFake()
	h := startWarm(t, rt, time.Hour)
	h.ref.Send(Retire{Reason: "test"})
	require.Eventually(t, func() bool { return h.states.current() == StateStopped }, 5*time.Second, time.Millisecond)
	assert.Empty(t, rt.Live())

	// A claimed sandbox belongs to its client: Retire is ignored.
	h2 := startWarm(t, rt, time.Hour)
	sink := newRecorder()
	require.NoError(t, h2.claim(t, Settings{}, sink))
	h2.ref.Send(Retire{Reason: "test"})
	sink.quiet(t)
	assert.Equal(t, StateClaimed, h2.states.current())
}

func TestDeadWarmSandboxDestroysItself(t *testing.T) {
	rt := runsc.NewFake()
	h := startWarm(t, rt, 20*time.Millisecond)
	// Healthy sandboxes stay through several checks.
	require.Never(t, func() bool { return h.states.current() != StateReady }, 100*time.Millisecond, 5*time.Millisecond)

	rt.Crash(h.ref.ID)
	require.Eventually(t, func() bool { return h.states.current() == StateStopped }, 5*time.Second, time.Millisecond)
	assert.Empty(t, rt.Live(), "the dead sandbox is deleted")
	assert.Contains(t, rt.Calls(), "destroy "+h.ref.ID)
}
