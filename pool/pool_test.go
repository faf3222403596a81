package pool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool/snapshots"
	"github.com/sandpool/sandpool/runsc"
)

type nopSink struct{}

func (nopSink) Send(ev actors.Event) { ev.Release() }

func newPool(t *testing.T, rt *runsc.Fake, max int) *Pool {
	t.Helper()
	p, err := New(Config{System: actor.NewActorSystem(), Runtime: rt, Limits: Limits{MaxSandboxes: max}, Logger: zerolog.Nop()})
	require.NoError(t, err)
	return p
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := New(Config{Runtime: runsc.NewFake(), Limits: Limits{MaxSandboxes: 1}})
	assert.Error(t, err)
	_, err = New(Config{System: actor.NewActorSystem(), Runtime: runsc.NewFake(), Limits: Limits{MaxSandboxes: 0}})
	assert.Error(t, err)
}

func TestCapacityCountsCreatingSandboxes(t *testing.T) {
	rt := runsc.NewFake()
	rt.CreateDelay = 200 * time.Millisecond
	p := newPool(t, rt, 2)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = p.Create(context.Background(), actors.Settings{}, nopSink{})
		}()
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			assert.ErrorIs(t, err, ErrNoCapacity)
			failed++
		}
	}
	assert.Equal(t, 1, failed, "two fit, the third is refused while they are still creating")
	assert.Equal(t, 2, p.Live())

	require.NoError(t, p.Shutdown(context.Background()))
	assert.Empty(t, rt.Live())
	assert.Equal(t, 0, p.Live())
}

func TestKilledSandboxFreesItsSlot(t *testing.T) {
	rt := runsc.NewFake()
	p := newPool(t, rt, 1)
	ref, err := p.Create(context.Background(), actors.Settings{}, nopSink{})
	require.NoError(t, err)
	ref.Send(actors.KillSandbox{})
	require.Eventually(t, func() bool { return p.Live() == 0 }, 2*time.Second, 5*time.Millisecond)
	_, err = p.Create(context.Background(), actors.Settings{}, nopSink{})
	require.NoError(t, err)
	require.NoError(t, p.Shutdown(context.Background()))
}

func TestCreateFailureIsReportedAndCleaned(t *testing.T) {
	rt := runsc.NewFake()
	rt.CreateErr = func(string) error { return errors.New("no luck") }
	p := newPool(t, rt, 1)
	for range 20 {
		_, err := p.Create(context.Background(), actors.Settings{}, nopSink{})
		require.ErrorContains(t, err, "no luck")
		require.Eventually(t, func() bool { return p.Live() == 0 }, 2*time.Second, time.Millisecond)
	}
	// Each failure is counted once, also when the actor's Terminated
	// overtook its Created.
	assert.Equal(t, 20.0, testutil.ToFloat64(p.metrics.createFailures.WithLabelValues(noPoolLabel)))
	require.NoError(t, p.Shutdown(context.Background()))
}

func TestCancelledCreateKillsTheSandbox(t *testing.T) {
	rt := runsc.NewFake()
	rt.CreateDelay = time.Minute
	p := newPool(t, rt, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := p.Create(ctx, actors.Settings{}, nopSink{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Eventually(t, func() bool { return p.Live() == 0 }, 2*time.Second, 5*time.Millisecond)
	assert.Empty(t, rt.Live())
}

func TestShutdownDeletesEverySandboxAndRefusesNewOnes(t *testing.T) {
	rt := runsc.NewFake()
	p := newPool(t, rt, 10)
	for i := 0; i < 5; i++ {
		_, err := p.Create(context.Background(), actors.Settings{}, nopSink{})
		require.NoError(t, err)
	}
	require.Len(t, rt.Live(), 5)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	require.NoError(t, p.Shutdown(ctx))
	assert.Empty(t, rt.Live())
	_, err := p.Create(context.Background(), actors.Settings{}, nopSink{})
	assert.ErrorIs(t, err, ErrShuttingDown)
	assert.NoError(t, p.Shutdown(ctx), "Shutdown is idempotent")
}

func TestAbandonedCreateLeavesNoSandbox(t *testing.T) {
	// Clients gone at every point of a create (before the supervisor
	// answers, while queued for a slot, while runsc creates): whichever way
	// each race goes, no sandbox outlives its request (it has no idle
	// timeout to reap it).
	rt := runsc.NewFake()
	rt.CreateDelay = time.Millisecond
	p := newPool(t, rt, 100)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i)*100*time.Microsecond)
			defer cancel()
			ref, err := p.Create(ctx, actors.Settings{}, nopSink{})
			if err != nil {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
			} else {
				ref.Send(actors.KillSandbox{}) // the client got it in time
			}
		}()
	}
	wg.Wait()
	require.Eventually(t, func() bool { return p.Live() == 0 && len(rt.Live()) == 0 }, 5*time.Second, 10*time.Millisecond,
		"%d sandboxes left: %s %v", p.Live(), dumpPool(p), rt.Calls())
}

func TestCreateFromSnapshot(t *testing.T) {
	rt := runsc.NewFake()
	store, err := snapshots.New(snapshots.Config{Dir: t.TempDir()})
	require.NoError(t, err)
	p, err := New(Config{System: actor.NewActorSystem(), Runtime: rt, Limits: Limits{MaxSandboxes: 4}, Logger: zerolog.Nop(), Snapshots: store})
	require.NoError(t, err)
	_, err = store.Create(context.Background(), "base", "sb", func(_ context.Context, dest string) error {
		return os.WriteFile(dest, []byte(runsc.FakeSnapshotPrefix+"content"), 0o600)
	})
	require.NoError(t, err)

	ref, err := p.Create(context.Background(), actors.Settings{Snapshot: "base"}, nopSink{})
	require.NoError(t, err)
	assert.Equal(t, runsc.FakeSnapshotPrefix+"content", string(rt.Rootfs(ref.ID)))

	_, err = p.Create(context.Background(), actors.Settings{Snapshot: "missing"}, nopSink{})
	assert.ErrorIs(t, err, snapshots.ErrNotFound)
	disabled := newPool(t, rt, 4)
	_, err = disabled.Create(context.Background(), actors.Settings{Snapshot: "base"}, nopSink{})
	assert.ErrorIs(t, err, ErrSnapshotsDisabled)
	assert.Equal(t, 1, p.Live(), "failed creates leave nothing")
}

// dumpPool describes the pool for a failure message.
func dumpPool(p *Pool) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := p.Status(ctx)
	return fmt.Sprintf("%+v %v", st, err)
}
