package pool

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool/checkpoints"
	"github.com/sandpool/sandpool/runsc"
)

// client is a Sink that records statuses and answers probes as told.
type client struct {
	mu       sync.Mutex
	statuses []string
	dead     atomic.Bool
	probed   atomic.Int32
}

func (c *client) Send(ev actors.Event) {
	ev.Release()
	if ev.Kind == actors.EventStatus {
		c.mu.Lock()
		c.statuses = append(c.statuses, ev.Status)
		c.mu.Unlock()
	}
}

func (c *client) Probe(time.Duration) bool {
	c.probed.Add(1)
	return !c.dead.Load()
}

func (c *client) seen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.statuses...)
}

func (c *client) waitFor(t *testing.T, status string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, s := range c.seen() {
			if s == status {
				return true
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond, "no %s in %v", status, c.seen())
}

type attachEnv struct {
	rt    *runsc.Fake
	pool  *Pool
	store *checkpoints.Store
}

func newAttachEnv(t *testing.T, tweak ...func(*Config)) *attachEnv {
	t.Helper()
	rt := runsc.NewFake()
	store, err := checkpoints.New(checkpoints.Config{Dir: t.TempDir(), RunscVersion: "test"})
	require.NoError(t, err)
	cfg := Config{System: actor.NewActorSystem(), Runtime: rt, Limits: Limits{MaxSandboxes: 10},
		Logger: zerolog.Nop(), Checkpoints: store}
	for _, f := range tweak {
		f(&cfg)
	}
	p, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, p.Shutdown(ctx))
		assert.Empty(t, rt.Live(), "sandboxes left after shutdown")
	})
	return &attachEnv{rt: rt, pool: p, store: store}
}

func (e *attachEnv) create(t *testing.T, settings actors.Settings, sink actors.Sink) *actors.Ref {
	t.Helper()
	ref, err := e.pool.Create(context.Background(), settings, sink)
	require.NoError(t, err)
	return ref
}

func (e *attachEnv) attach(id, token string, sink actors.Sink, restoring *atomic.Bool) (*actors.Ref, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := AttachRequest{ID: id, Token: token, Sink: sink}
	if restoring != nil {
		req.Restoring = func() { restoring.Store(true) }
	}
	return e.pool.Attach(ctx, req)
}

// checkpoint checkpoints ref's sandbox through its client.
func (e *attachEnv) checkpoint(t *testing.T, ref *actors.Ref, c *client) {
	t.Helper()
	ref.Send(actors.Checkpoint{})
	c.waitFor(t, actors.StatusCheckpointed)
	require.Eventually(t, func() bool { return e.pool.Live() == 0 }, 5*time.Second, 5*time.Millisecond)
}

func TestAttachRefusals(t *testing.T) {
	e := newAttachEnv(t, func(c *Config) { c.Limits.Pools = []PoolConfig{{Warm: 1}} })
	owner := &client{}
	ref := e.create(t, actors.Settings{}, owner)
	require.Eventually(t, func() bool { return len(e.rt.Live()) == 2 }, 5*time.Second, 5*time.Millisecond)
	var warmID string
	for _, id := range e.rt.Live() {
		if id != ref.ID {
			warmID = id
		}
	}

	tests := []struct {
		name, id, token string
		want            error
	}{
		{"unknown id", "0123456789abcdef0123456789abcdef", ref.Token, ErrNotFound},
		{"not an id", "../../etc", ref.Token, ErrNotFound},
		{"wrong token", ref.ID, "nope", ErrInvalidToken},
		{"live owner", ref.ID, ref.Token, ErrInUse},
		{"never claimed warm sandbox", warmID, ref.Token, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.attach(tt.id, tt.token, &client{}, nil)
			assert.ErrorIs(t, err, tt.want)
		})
	}
	assert.NotContains(t, owner.seen(), actors.StatusRunning, "the owner was never disturbed")
	assert.Equal(t, int32(1), owner.probed.Load(), "only the valid attach probed the owner")
}

func TestAttachReplacesADeadClient(t *testing.T) {
	e := newAttachEnv(t)
	owner := &client{}
	ref := e.create(t, actors.Settings{}, owner)
	owner.dead.Store(true)
	next := &client{}
	got, err := e.attach(ref.ID, ref.Token, next, nil)
	require.NoError(t, err)
	assert.Equal(t, ref.ID, got.ID)
	assert.Equal(t, []string{actors.StatusRunning}, next.seen())
}

func TestCheckpointedSandboxIsRestoredOnAttach(t *testing.T) {
	e := newAttachEnv(t)
	owner := &client{}
	ref := e.create(t, actors.Settings{EnableCheckpoint: true, IdleTimeout: time.Minute}, owner)
	e.checkpoint(t, ref, owner)

	_, err := e.attach(ref.ID, "wrong", &client{}, nil)
	assert.ErrorIs(t, err, ErrInvalidToken, "the token is checked before anything is restored")
	assert.NotContains(t, e.rt.Calls(), "restore "+ref.ID)

	var restoring atomic.Bool
	next := &client{}
	got, err := e.attach(ref.ID, ref.Token, next, &restoring)
	require.NoError(t, err)
	assert.True(t, restoring.Load(), "the client heard RESTORING first")
	assert.Equal(t, ref.ID, got.ID)
	assert.Equal(t, []string{actors.StatusRunning}, next.seen())
	assert.Contains(t, e.rt.Calls(), "restore "+ref.ID)
	assert.Equal(t, 1, e.pool.Live())

	// The restored sandbox is an ordinary client's sandbox again.
	_, err = e.attach(ref.ID, ref.Token, &client{}, nil)
	assert.ErrorIs(t, err, ErrInUse)
}

func TestRestoreFailureLeavesTheCheckpoint(t *testing.T) {
	e := newAttachEnv(t)
	owner := &client{}
	ref := e.create(t, actors.Settings{EnableCheckpoint: true}, owner)
	e.checkpoint(t, ref, owner)
	meta, err := e.store.Load(ref.ID)
	require.NoError(t, err)
	require.NoError(t, os.RemoveAll(filepath.Join(e.store.ImageDir(meta), runsc.FakeImageFile)))

	_, err = e.attach(ref.ID, ref.Token, &client{}, nil)
	assert.ErrorIs(t, err, ErrRestore)
	assert.ErrorIs(t, err, checkpoints.ErrCorrupt)
	_, err = e.store.Load(ref.ID)
	assert.NoError(t, err)
	// The failed actor's end reaches the supervisor after the answer.
	assert.Eventually(t, func() bool { return e.pool.Live() == 0 }, 5*time.Second, 5*time.Millisecond)
}

// A wrong token learns nothing about a damaged checkpoint.
func TestWrongTokenOnADamagedCheckpoint(t *testing.T) {
	e := newAttachEnv(t)
	owner := &client{}
	ref := e.create(t, actors.Settings{EnableCheckpoint: true}, owner)
	e.checkpoint(t, ref, owner)
	meta, err := e.store.Load(ref.ID)
	require.NoError(t, err)
	require.NoError(t, os.RemoveAll(e.store.ImageDir(meta)))

	_, err = e.attach(ref.ID, "wrong", &client{}, nil)
	assert.ErrorIs(t, err, ErrInvalidToken)
	_, err = e.attach(ref.ID, ref.Token, &client{}, nil)
	assert.ErrorIs(t, err, ErrRestore, "the owner hears what is wrong")

	require.NoError(t, os.WriteFile(filepath.Join(e.store.Dir(), ref.ID, "meta.json"), []byte("{"), 0o600))
	_, err = e.attach(ref.ID, ref.Token, &client{}, nil)
	require.ErrorIs(t, err, ErrRestore)
	assert.NotContains(t, err.Error(), "meta.json", "unverifiable: no details")
}

func TestConcurrentRestoresRestoreOnce(t *testing.T) {
	e := newAttachEnv(t)
	owner := &client{}
	ref := e.create(t, actors.Settings{EnableCheckpoint: true}, owner)
	e.checkpoint(t, ref, owner)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.attach(ref.ID, ref.Token, &client{}, nil)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else {
			assert.ErrorIs(t, err, ErrInUse)
		}
	}
	assert.Equal(t, 1, ok, "one client gets it, the others hear it is in use")
	restores := 0
	for _, call := range e.rt.Calls() {
		if call == "restore "+ref.ID {
			restores++
		}
	}
	assert.Equal(t, 1, restores)
}

func TestHandoffMovesTheSandboxToTheNewClient(t *testing.T) {
	e := newAttachEnv(t)
	owner := &client{}
	ref := e.create(t, actors.Settings{EnableCheckpoint: true, EnableHandoff: true}, owner)
	var restoring atomic.Bool
	next := &client{}
	got, err := e.attach(ref.ID, ref.Token, next, &restoring)
	require.NoError(t, err)
	assert.Equal(t, ref.ID, got.ID)
	assert.True(t, restoring.Load())
	assert.Equal(t, []string{actors.StatusLockReleaseReq, actors.StatusCheckpointing, actors.StatusCheckpointed}, owner.seen())
	assert.Equal(t, []string{actors.StatusRunning}, next.seen())
	assert.Equal(t, 1, e.pool.Live())
}

func TestCheckpointsDisabled(t *testing.T) {
	e := newAttachEnv(t, func(c *Config) { c.Checkpoints = nil })
	_, err := e.pool.Create(context.Background(), actors.Settings{EnableCheckpoint: true}, &client{})
	assert.ErrorIs(t, err, ErrCheckpointsDisabled)
	assert.Empty(t, e.rt.Calls())
}

func TestCheckpointRetention(t *testing.T) {
	e := newAttachEnv(t, func(c *Config) {
		c.CheckpointRetention = 200 * time.Millisecond
		c.HousekeepingInterval = 10 * time.Millisecond
	})
	owner := &client{}
	old := e.create(t, actors.Settings{EnableCheckpoint: true}, owner)
	e.checkpoint(t, old, owner)
	// A live sandbox's checkpoint stays however old it is.
	liveOwner := &client{}
	live := e.create(t, actors.Settings{EnableCheckpoint: true}, liveOwner)
	e.checkpoint(t, live, liveOwner)
	_, err := e.attach(live.ID, live.Token, &client{}, nil)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		_, err := e.store.Load(old.ID)
		return err != nil
	}, 5*time.Second, 10*time.Millisecond)
	_, err = e.store.Load(live.ID)
	assert.NoError(t, err)
}

// An actor that stopped before answering (the supervisor may not know yet)
// is seen as gone at once, not as silent after actorAnswer.
func TestAskAttachSeesAStoppedActor(t *testing.T) {
	e := newAttachEnv(t)
	c := &client{}
	ref := e.create(t, actors.Settings{}, c)
	ref.Send(actors.KillSandbox{})
	c.waitFor(t, actors.StatusKilled)
	<-ref.Done

	_, answer := e.pool.askAttach(context.Background(), ref, actors.Attach{Sink: &client{}})
	assert.Equal(t, actorGone, answer)
}

// killedThenCreate is a client that asks for a new sandbox the moment it
// hears KILLED, from within the old actor's delivery: before that actor can
// have terminated.
type killedThenCreate struct {
	client
	create func() error
	err    chan error
}

func (k *killedThenCreate) Send(ev actors.Event) {
	k.client.Send(ev)
	if ev.Status == actors.StatusKilled {
		k.err <- k.create()
	}
}

// The client hears KILLED once the sandbox is gone from the host; a create
// sent right then finds the slot free, though the old actor still ends.
func TestASlotIsFreeOnceTheClientHearsKilled(t *testing.T) {
	e := newAttachEnv(t, func(c *Config) { c.Limits.MaxSandboxes = 1 })
	next := &client{}
	k := &killedThenCreate{err: make(chan error, 1)}
	k.create = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := e.pool.Create(ctx, actors.Settings{}, next)
		return err
	}
	ref := e.create(t, actors.Settings{}, k)
	ref.Send(actors.KillSandbox{})
	require.NoError(t, <-k.err)
}
