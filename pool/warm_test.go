package pool

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool/snapshots"
	"github.com/sandpool/sandpool/runsc"
)

// gate makes a fake runtime's creates fail or hang on demand, without
// writing the fake's fields while sandboxes are being created.
type gate struct {
	fail atomic.Bool
	// block makes creates wait until release is closed (at cleanup).
	block   atomic.Bool
	release chan struct{}
}

func (g *gate) install(rt *runsc.Fake) {
	g.release = make(chan struct{})
	rt.CreateErr = func(string) error {
		if g.fail.Load() {
			return errors.New("runsc is broken")
		}
		if g.block.Load() {
			<-g.release
		}
		return nil
	}
}

type warmEnv struct {
	rt    *runsc.Fake
	p     *Pool
	gate  *gate
	store *snapshots.Store
	reg   *prometheus.Registry
}

// newWarmEnv starts a pool with fast timers; tweak edits its config.
func newWarmEnv(t *testing.T, limits Limits, tweak ...func(*Config)) *warmEnv {
	t.Helper()
	e := &warmEnv{rt: runsc.NewFake(), gate: &gate{}, reg: prometheus.NewRegistry()}
	e.gate.install(e.rt)
	store, err := snapshots.New(snapshots.Config{Dir: t.TempDir()})
	require.NoError(t, err)
	e.store = store
	cfg := Config{
		System: actor.NewActorSystem(), Runtime: e.rt, Limits: limits, Logger: zerolog.Nop(),
		Snapshots: store, Registerer: e.reg,
		Backoff:        Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		HealthInterval: 20 * time.Millisecond, HousekeepingInterval: 10 * time.Millisecond,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	e.p, err = New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		close(e.gate.release)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, e.p.Shutdown(ctx))
		assert.Empty(t, e.rt.Live(), "every sandbox is deleted at shutdown")
	})
	return e
}

// saveSnapshot writes a fake snapshot with content under name.
func (e *warmEnv) saveSnapshot(t *testing.T, name, content string) snapshots.Info {
	t.Helper()
	info, err := e.store.Create(context.Background(), name, "test", func(_ context.Context, dest string) error {
		return os.WriteFile(dest, []byte(runsc.FakeSnapshotPrefix+content), 0o600)
	})
	require.NoError(t, err)
	return info
}

func (e *warmEnv) status(t *testing.T) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := e.p.Status(ctx)
	require.NoError(t, err)
	return st
}

// pool returns one pool's status (zero if there is none).
func (e *warmEnv) pool(t *testing.T, label string) PoolStatus {
	for _, ps := range e.status(t).Pools {
		if ps.Pool == label {
			return ps
		}
	}
	return PoolStatus{}
}

// waitWarm waits until the pool holds exactly n ready sandboxes and
// creates nothing.
func (e *warmEnv) waitWarm(t *testing.T, label string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		ps := e.pool(t, label)
		return ps.Warm == n && ps.Creating == 0
	}, 5*time.Second, 5*time.Millisecond, "pool %s never held %d: %s", label, n, dumpPool(e.p))
}

func (e *warmEnv) create(t *testing.T, snapshot string) *actors.Ref {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ref, err := e.p.Create(ctx, actors.Settings{Snapshot: snapshot}, nopSink{})
	require.NoError(t, err)
	return ref
}

// createCalls are the runtime's create calls so far, in order.
func (e *warmEnv) createCalls() []string {
	return slices.DeleteFunc(e.rt.Calls(), func(c string) bool { return !strings.HasPrefix(c, "create ") })
}

func TestClaimFromAStockedPoolMakesNoRuntimeCall(t *testing.T) {
	// max = warm: the claimed sandbox still counts, so no refill starts
	// and every runtime call after stocking would be the claim's.
	e := newWarmEnv(t, Limits{MaxSandboxes: 10, Pools: []PoolConfig{{Warm: 2, Max: 2}}})
	e.waitWarm(t, baseLabel, 2)
	calls := e.rt.Calls()
	// A cold create would now hang until the request's deadline.
	e.gate.block.Store(true)

	ref := e.create(t, "")
	assert.True(t, ref.Warm, "served from the pool")
	assert.Equal(t, calls, e.rt.Calls(), "a claim makes no runtime call")
	assert.Contains(t, e.rt.Live(), ref.ID)
	ps := e.pool(t, baseLabel)
	assert.Equal(t, 1, ps.Warm)
	assert.Equal(t, 1, ps.InUse)
	assert.Equal(t, Claims{Hit: 1}, ps.Claims)
	assert.InDelta(t, 1.0, *ps.HitRate, 0.001)
}

func TestPoolRefillsToTargetAfterClaims(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 20, Pools: []PoolConfig{{Warm: 3}}})
	e.waitWarm(t, baseLabel, 3)
	var refs []*actors.Ref
	for range 5 {
		refs = append(refs, e.create(t, ""))
	}
	e.waitWarm(t, baseLabel, 3)
	ps := e.pool(t, baseLabel)
	assert.Equal(t, uint64(5), ps.Claims.Hit+ps.Claims.Miss)
	assert.GreaterOrEqual(t, ps.Claims.Hit, uint64(3), "the first three were ready")
	assert.Equal(t, 5, ps.InUse)
	assert.Len(t, e.rt.Live(), 8)

	// A used sandbox is never returned to the pool: killing it destroys it.
	for _, ref := range refs {
		ref.Send(actors.KillSandbox{})
	}
	require.Eventually(t, func() bool { return len(e.rt.Live()) == 3 }, 5*time.Second, 5*time.Millisecond)
	for _, ref := range refs {
		assert.NotContains(t, e.rt.Live(), ref.ID)
	}
	assert.Equal(t, 3, e.pool(t, baseLabel).Warm)
}

func TestCreateConcurrencyIsNeverExceeded(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 40, CreateConcurrency: 2, Pools: []PoolConfig{{Warm: 4}, {Snapshot: "s", Warm: 3}}},
		func(c *Config) { c.Runtime.(*runsc.Fake).CreateDelay = 10 * time.Millisecond })
	e.saveSnapshot(t, "s", "s")
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			snapshot := ""
			if i%2 == 0 {
				snapshot = "s"
			}
			e.create(t, snapshot)
		}()
	}
	wg.Wait()
	e.waitWarm(t, baseLabel, 4)
	e.waitWarm(t, "s", 3)
	assert.Equal(t, 2, e.rt.MaxConcurrentCreates(), "two at a time, never more")
}

func TestClientCreatesGoBeforeRefills(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 40, CreateConcurrency: 1, Pools: []PoolConfig{{Warm: 10}}},
		func(c *Config) { c.Runtime.(*runsc.Fake).CreateDelay = 20 * time.Millisecond })
	ref := e.create(t, "") // a miss while the pool fills
	assert.False(t, ref.Warm)
	// At most the one refill in flight went first.
	calls := e.createCalls()
	i := slices.Index(calls, "create "+ref.ID)
	require.GreaterOrEqual(t, i, 0)
	assert.LessOrEqual(t, i, 1, "the client waited behind at most one refill: %v", calls)
	e.waitWarm(t, baseLabel, 10)
}

func TestFailingPoolBacksOffAndRecovers(t *testing.T) {
	// One creation at a time, so the failures come one after another.
	e := newWarmEnv(t, Limits{MaxSandboxes: 10, CreateConcurrency: 1},
		func(c *Config) { c.Backoff = Backoff{Initial: 20 * time.Millisecond, Max: 80 * time.Millisecond} })
	e.gate.fail.Store(true)
	start := time.Now()
	require.NoError(t, e.p.Reconfigure(context.Background(), Limits{MaxSandboxes: 10, CreateConcurrency: 1, Pools: []PoolConfig{{Warm: 2}}}))
	require.Eventually(t, func() bool { return e.pool(t, baseLabel).Failures >= 6 }, 5*time.Second, time.Millisecond, "%s", dumpPool(e.p))
	elapsed := time.Since(start)
	ps := e.pool(t, baseLabel)
	assert.False(t, ps.Progressing)
	assert.Contains(t, ps.LastError, "runsc is broken")
	// Waits of at least 70% of 20, 40, 80, 80, 80 ms separate six failures:
	// a tight loop would fail thousands of times in that time.
	assert.GreaterOrEqual(t, elapsed, 210*time.Millisecond)
	assert.LessOrEqual(t, len(e.createCalls()), ps.Failures+1, "every attempt is a counted failure (one may be in flight)")

	// A client's create is not held back by the pool's backoff.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.p.Create(ctx, actors.Settings{}, nopSink{})
	assert.ErrorContains(t, err, "runsc is broken")

	e.gate.fail.Store(false)
	e.waitWarm(t, baseLabel, 2)
	ps = e.pool(t, baseLabel)
	assert.True(t, ps.Progressing)
	assert.Zero(t, ps.Failures)
	assert.Empty(t, ps.LastError)
	assert.GreaterOrEqual(t, testutil.ToFloat64(e.p.metrics.createFailures.WithLabelValues(baseLabel)), 6.0)
}

func TestReconfigureResizesPools(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 10, Pools: []PoolConfig{{Warm: 2}}})
	e.waitWarm(t, baseLabel, 2)
	claimed := e.create(t, "")
	e.waitWarm(t, baseLabel, 2)
	ctx := context.Background()

	require.NoError(t, e.p.Reconfigure(ctx, Limits{MaxSandboxes: 10, Pools: []PoolConfig{{Warm: 4}}}))
	e.waitWarm(t, baseLabel, 4)
	assert.Len(t, e.rt.Live(), 5)

	require.NoError(t, e.p.Reconfigure(ctx, Limits{MaxSandboxes: 10, Pools: []PoolConfig{{Warm: 1}}}))
	e.waitWarm(t, baseLabel, 1)
	require.Eventually(t, func() bool { return len(e.rt.Live()) == 2 }, 5*time.Second, 5*time.Millisecond)

	// A pool removed altogether retires its ready sandboxes; the claimed
	// one belongs to its client and stays.
	require.NoError(t, e.p.Reconfigure(ctx, Limits{MaxSandboxes: 10}))
	require.Eventually(t, func() bool { return len(e.rt.Live()) == 1 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []string{claimed.ID}, e.rt.Live())
	assert.Empty(t, e.status(t).Pools)

	// An invalid config is refused and the old one stays.
	err := e.p.Reconfigure(ctx, Limits{MaxSandboxes: 2, Pools: []PoolConfig{{Warm: 3}}})
	assert.ErrorContains(t, err, "more than max_sandboxes")
	assert.Empty(t, e.status(t).Pools)
	assert.Equal(t, 10, e.status(t).MaxSandboxes)
}

func TestReplacedSnapshotDrainsTheOldWarmSandboxes(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 10, Pools: []PoolConfig{{Snapshot: "s", Warm: 2}}},
		func(c *Config) { c.HousekeepingInterval = time.Hour }) // only the claim itself can notice
	e.saveSnapshot(t, "s", "v1")
	e.waitWarm(t, "s", 2)
	old := e.rt.Live()

	// Replaced behind the server's back (as another process would): the
	// next claim must not get v1.
	e.saveSnapshot(t, "s", "v2")
	ref := e.create(t, "s")
	assert.False(t, ref.Warm, "no v2 sandbox was ready")
	assert.Equal(t, runsc.FakeSnapshotPrefix+"v2", string(e.rt.Rootfs(ref.ID)))
	e.waitWarm(t, "s", 2)
	require.Eventually(t, func() bool {
		live := e.rt.Live()
		return !slices.Contains(live, old[0]) && !slices.Contains(live, old[1])
	}, 5*time.Second, 5*time.Millisecond, "the v1 sandboxes are drained")

	next := e.create(t, "s")
	assert.True(t, next.Warm)
	assert.Equal(t, runsc.FakeSnapshotPrefix+"v2", string(e.rt.Rootfs(next.ID)))
}

func TestSnapshotSavedOnTheServerDrainsAtOnce(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 10, Pools: []PoolConfig{{Snapshot: "s", Warm: 1}}},
		func(c *Config) { c.HousekeepingInterval = time.Hour })
	e.saveSnapshot(t, "s", "v1")
	e.waitWarm(t, "s", 1)
	src := e.create(t, "s")
	e.waitWarm(t, "s", 1)
	old := slices.DeleteFunc(e.rt.Live(), func(id string) bool { return id == src.ID })[0]

	// The client saves "s" again from its sandbox.
	src.Send(actors.SnapshotFilesystem{Name: "s"})
	require.Eventually(t, func() bool { return !slices.Contains(e.rt.Live(), old) }, 5*time.Second, 5*time.Millisecond)
	e.waitWarm(t, "s", 1)
	ref := e.create(t, "s")
	assert.True(t, ref.Warm)
	assert.Contains(t, string(e.rt.Rootfs(ref.ID)), "sandbox "+src.ID, "built from the new version")
}

func TestAutoWarmGivesNewSnapshotsAPool(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 10, AutoWarm: 2})
	src := e.create(t, "")
	src.Send(actors.SnapshotFilesystem{Name: "fresh"})
	e.waitWarm(t, "fresh", 2)
	ps := e.pool(t, "fresh")
	assert.True(t, ps.Auto)
	assert.Equal(t, 2, ps.Target)
	ref := e.create(t, "fresh")
	assert.True(t, ref.Warm)

	// auto_warm 0 on reload drops the auto pools.
	require.NoError(t, e.p.Reconfigure(context.Background(), Limits{MaxSandboxes: 10}))
	assert.Empty(t, e.status(t).Pools)
	require.Eventually(t, func() bool { return len(e.rt.Live()) == 2 }, 5*time.Second, 5*time.Millisecond,
		"only the two claimed sandboxes stay")
}

func TestRemovedSnapshotEmptiesItsPool(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 10, Pools: []PoolConfig{{Snapshot: "s", Warm: 2}}})
	e.saveSnapshot(t, "s", "v1")
	e.waitWarm(t, "s", 2)
	require.NoError(t, e.store.Remove("s")) // sandpool snapshots rm
	require.Eventually(t, func() bool { return len(e.rt.Live()) == 0 }, 5*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return !e.pool(t, "s").Progressing }, 5*time.Second, 5*time.Millisecond)
	assert.Contains(t, e.pool(t, "s").LastError, "not found")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.p.Create(ctx, actors.Settings{Snapshot: "s"}, nopSink{})
	assert.ErrorIs(t, err, snapshots.ErrNotFound)
}

func TestDeadWarmSandboxIsReplaced(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 10, Pools: []PoolConfig{{Warm: 2}}})
	e.waitWarm(t, baseLabel, 2)
	victim := e.rt.Live()[0]
	e.rt.Crash(victim)
	require.Eventually(t, func() bool { return !slices.Contains(e.rt.Live(), victim) }, 5*time.Second, 5*time.Millisecond)
	e.waitWarm(t, baseLabel, 2)
	// Claims only ever get live sandboxes.
	for range 2 {
		ref := e.create(t, "")
		assert.NoError(t, e.rt.Alive(context.Background(), ref.ID))
	}
}

func TestOldWarmSandboxesAreRecycled(t *testing.T) {
	// Creates take 30 ms: recycling that deleted first and created after
	// would leave the pool empty for that long.
	e := newWarmEnv(t, Limits{MaxSandboxes: 10, Pools: []PoolConfig{{Warm: 1, MaxAge: 100 * time.Millisecond}}},
		func(c *Config) { c.Runtime.(*runsc.Fake).CreateDelay = 30 * time.Millisecond })
	e.waitWarm(t, baseLabel, 1)
	first := e.rt.Live()[0]
	emptied := false
	require.Eventually(t, func() bool {
		if e.pool(t, baseLabel).Warm == 0 {
			emptied = true
		}
		live := e.rt.Live()
		return len(live) == 1 && live[0] != first
	}, 5*time.Second, time.Millisecond, "the old one is replaced")
	assert.False(t, emptied, "the replacement is ready before the old one goes")
}

func TestCapacityCountsWarmSandboxes(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 3, Pools: []PoolConfig{{Warm: 3}}})
	e.waitWarm(t, baseLabel, 3)
	// A client beats a warm sandbox of another kind: one is evicted.
	e.saveSnapshot(t, "other", "x")
	ref := e.create(t, "other")
	assert.False(t, ref.Warm)
	require.Eventually(t, func() bool { return e.p.Live() == 3 }, 5*time.Second, 5*time.Millisecond)
	e.create(t, "")
	e.create(t, "")
	// All three are claimed now: the cap holds.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.p.Create(ctx, actors.Settings{}, nopSink{})
	assert.ErrorIs(t, err, ErrNoCapacity)
	assert.Len(t, e.rt.Live(), 3)
}

func TestConcurrentClaimsHitThenMiss(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 50, Pools: []PoolConfig{{Warm: 5}}},
		func(c *Config) { c.Runtime.(*runsc.Fake).CreateDelay = 5 * time.Millisecond })
	e.waitWarm(t, baseLabel, 5)
	var hits atomic.Int32
	var wg sync.WaitGroup
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if e.create(t, "").Warm {
				hits.Add(1)
			}
		}()
	}
	wg.Wait()
	assert.GreaterOrEqual(t, hits.Load(), int32(5))
	e.waitWarm(t, baseLabel, 5)
	ps := e.pool(t, baseLabel)
	assert.Equal(t, uint64(30), ps.Claims.Hit+ps.Claims.Miss)
	assert.Len(t, e.rt.Live(), 35)
}

func TestShutdownWithCreationsInFlight(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 10, Pools: []PoolConfig{{Warm: 4}}},
		func(c *Config) { c.Runtime.(*runsc.Fake).CreateDelay = time.Hour })
	require.Eventually(t, func() bool { return e.status(t).Creating == 2 }, 5*time.Second, time.Millisecond)
	// A client waits for a slot meanwhile.
	res := make(chan error, 1)
	go func() {
		_, err := e.p.Create(context.Background(), actors.Settings{}, nopSink{})
		res <- err
	}()
	require.Eventually(t, func() bool { return e.status(t).Queued == 1 }, 5*time.Second, time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, e.p.Shutdown(ctx))
	assert.ErrorIs(t, <-res, ErrShuttingDown)
	assert.Empty(t, e.rt.Live())
	assert.Zero(t, e.p.Live())
}

func TestMetrics(t *testing.T) {
	e := newWarmEnv(t, Limits{MaxSandboxes: 10, Pools: []PoolConfig{{Warm: 1, Max: 1}}})
	e.waitWarm(t, baseLabel, 1)
	e.create(t, "") // hit
	e.create(t, "") // miss: max reached, no refill
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.p.Create(ctx, actors.Settings{Snapshot: "nope"}, nopSink{})
	require.Error(t, err)

	m := e.p.metrics
	assert.Equal(t, 1.0, testutil.ToFloat64(m.claims.WithLabelValues(baseLabel, "hit")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.claims.WithLabelValues(baseLabel, "miss")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.claims.WithLabelValues(noPoolLabel, "error")))
	assert.Equal(t, 2.0, testutil.ToFloat64(m.sandboxes.WithLabelValues("claimed")))
	assert.Equal(t, 2, testutil.CollectAndCount(m.claimSeconds))
	assert.Equal(t, 2, testutil.CollectAndCount(m.createSeconds), "warm and cold")

	// The per-pool gauges come from Status.
	problems, err := testutil.GatherAndLint(e.reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
	assert.NoError(t, testutil.GatherAndCompare(e.reg, strings.NewReader(`
# HELP sandpool_pool_target Warm sandboxes the pool keeps.
# TYPE sandpool_pool_target gauge
sandpool_pool_target{pool="@base"} 1
# HELP sandpool_pool_warm Ready sandboxes in the pool.
# TYPE sandpool_pool_warm gauge
sandpool_pool_warm{pool="@base"} 0
`), "sandpool_pool_target", "sandpool_pool_warm"))
}
