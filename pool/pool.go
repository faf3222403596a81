// Package pool is the supervisor of every sandbox actor: it keeps warm pools
// of ready sandboxes per filesystem snapshot, hands them to clients, refills
// them with bounded concurrency, creates the rest cold under a global cap,
// and stops every sandbox at shutdown.
//
// Concurrency: Pool's methods are safe for concurrent use; they talk to the
// supervisor actor with messages that carry reply channels, and only the
// supervisor touches pool state.
package pool

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool/checkpoints"
	"github.com/sandpool/sandpool/pool/snapshots"
	"github.com/sandpool/sandpool/runsc"
)

// Sentinel errors of Create.
var (
	// ErrNoCapacity means the global sandbox cap is reached.
	ErrNoCapacity = errors.New("sandbox capacity reached")
	// ErrShuttingDown means the server is stopping.
	ErrShuttingDown = actors.ErrShuttingDown
	// ErrSnapshotsDisabled means no snapshot directory is configured.
	ErrSnapshotsDisabled = errors.New("filesystem snapshots are not enabled")
)

// Config configures a Pool.
type Config struct {
	System  *actor.ActorSystem
	Runtime runsc.Runtime
	// Limits are the caps and warm pools; Reconfigure replaces them.
	Limits        Limits
	CreateTimeout time.Duration
	Logger        zerolog.Logger
	// Snapshots is the filesystem snapshot store; nil disables snapshots.
	Snapshots *snapshots.Store
	// SnapshotTimeout bounds one filesystem snapshot (default 10 min).
	SnapshotTimeout time.Duration
	// Backoff paces a pool whose creates fail (default 500 ms doubling up
	// to 30 s, with jitter).
	Backoff Backoff
	// HealthInterval is how often a ready sandbox checks it is alive
	// (default 2 s).
	HealthInterval time.Duration
	// HousekeepingInterval is how often max_age and snapshot versions are
	// checked (default 1 s).
	HousekeepingInterval time.Duration
	// Registerer receives the pool's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Checkpoints is the checkpoint store; nil disables checkpoints.
	Checkpoints *checkpoints.Store
	// CheckpointTimeout bounds one checkpoint (default 5 min).
	CheckpointTimeout time.Duration
	// CheckpointRetention removes checkpoints of sandboxes not attached
	// for this long; 0 keeps them.
	CheckpointRetention time.Duration
	// ReplayBuffer bounds the output of one execution kept while its
	// client is away (default actors.DefaultReplayBuffer).
	ReplayBuffer int
}

// Backoff bounds the exponential wait between failing creates of a pool.
type Backoff struct{ Initial, Max time.Duration }

// Pool hands out sandboxes, warm when it can.
type Pool struct {
	cfg     Config
	log     zerolog.Logger
	root    *actor.RootContext
	pid     *actor.PID
	metrics *metrics
	live    atomic.Int64
	// closed is set by Shutdown: the supervisor may be gone, so Create
	// must not wait for its answer.
	closed atomic.Bool
	// stopped is closed once the supervisor is gone; a request that raced
	// with Shutdown stops waiting on it.
	stopped chan struct{}
}

// New spawns the supervisor actor, which starts filling the pools at once.
func New(cfg Config) (*Pool, error) {
	if cfg.System == nil || cfg.Runtime == nil {
		return nil, fmt.Errorf("pool: actor system and runtime are required")
	}
	if cfg.Limits.CreateConcurrency == 0 {
		cfg.Limits.CreateConcurrency = 2
	}
	if err := cfg.Limits.Validate(cfg.Snapshots != nil); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	if cfg.Backoff.Initial <= 0 {
		cfg.Backoff.Initial = 500 * time.Millisecond
	}
	if cfg.Backoff.Max <= 0 {
		cfg.Backoff.Max = 30 * time.Second
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 2 * time.Second
	}
	if cfg.HousekeepingInterval <= 0 {
		cfg.HousekeepingInterval = time.Second
	}
	p := &Pool{cfg: cfg, log: cfg.Logger, root: cfg.System.Root, stopped: make(chan struct{}), metrics: newMetrics()}
	if cfg.Registerer != nil {
		if err := p.metrics.register(cfg.Registerer, p); err != nil {
			return nil, fmt.Errorf("pool: metrics: %w", err)
		}
	}
	sup := newSupervisor(p)
	// Sandbox actors own OS resources: a failing one is stopped (its
	// Stopping handler destroys the sandbox), never restarted empty.
	strategy := actor.NewOneForOneStrategy(0, time.Second, func(any) actor.Directive { return actor.StopDirective })
	props := actor.PropsFromProducer(func() actor.Actor { return sup },
		actor.WithSupervisor(strategy),
		actor.WithReceiverMiddleware(actors.LogPanics(cfg.Logger)))
	pid, err := p.root.SpawnNamed(props, "sandboxes")
	if err != nil {
		return nil, fmt.Errorf("pool: spawn supervisor: %w", err)
	}
	p.pid = pid
	return p, nil
}

// Live is the number of sandboxes that exist or are being created, warm
// ones included.
func (p *Pool) Live() int { return int(p.live.Load()) }

// claimRetries bounds claims of warm sandboxes that died just before.
const claimRetries = 3

// Create gives a client a running sandbox (from settings.Snapshot, if set):
// a warm one from its pool if one is ready, else a new one. ref.Warm says
// which. If ctx ends first, the sandbox is killed.
func (p *Pool) Create(ctx context.Context, settings actors.Settings, sink actors.Sink) (*actors.Ref, error) {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		res, err := p.create(ctx, settings, sink)
		if errors.Is(err, actors.ErrNotReady) && attempt < claimRetries {
			continue // the warm sandbox died as it was claimed: ask again
		}
		p.metrics.claimed(res.label, res.hit, err, time.Since(start))
		if err != nil {
			return nil, err
		}
		ref := *res.ref
		ref.Warm = res.hit
		return &ref, nil
	}
}

func (p *Pool) create(ctx context.Context, settings actors.Settings, sink actors.Sink) (createResult, error) {
	if p.closed.Load() {
		return createResult{label: noPoolLabel}, ErrShuttingDown
	}
	if settings.EnableCheckpoint && p.cfg.Checkpoints == nil {
		return createResult{label: noPoolLabel}, ErrCheckpointsDisabled
	}
	from, err := p.openSnapshot(settings.Snapshot)
	if err != nil {
		return createResult{label: noPoolLabel}, err
	}
	reply := make(chan createResult, 1)
	p.root.Send(p.pid, createRequest{ctx: ctx, settings: settings, sink: sink, from: from, reply: reply})
	var res createResult
	select {
	case res = <-reply:
	case <-p.stopped:
		// The supervisor is gone; nobody took the snapshot over.
		closeSnapshot(from)
		return createResult{label: noPoolLabel}, ErrShuttingDown
	case <-ctx.Done():
		// The supervisor still answers: the reply says whether a sandbox
		// was made or claimed for this request.
		go func() {
			if res := <-reply; res.err == nil {
				res.ref.Send(actors.KillSandbox{})
			}
		}()
		return createResult{label: noPoolLabel}, ctx.Err()
	}
	if res.err != nil {
		return res, res.err
	}
	select {
	case err := <-res.created:
		return res, err
	case <-ctx.Done():
		res.ref.Send(actors.KillSandbox{})
		return res, ctx.Err()
	}
}

// Status reports the pools, as GET /pools shows them.
func (p *Pool) Status(ctx context.Context) (Status, error) {
	if p.closed.Load() {
		return Status{}, ErrShuttingDown
	}
	reply := make(chan Status, 1)
	p.root.Send(p.pid, statusRequest{reply: reply})
	select {
	case st := <-reply:
		return st, nil
	case <-p.stopped:
		return Status{}, ErrShuttingDown
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
}

// Reconfigure installs new limits and pools: new pools start filling,
// shrunk or removed ones retire their extra ready sandboxes, claimed ones
// are never touched. Invalid limits are refused and the old ones stay.
func (p *Pool) Reconfigure(ctx context.Context, limits Limits) error {
	if limits.CreateConcurrency == 0 {
		limits.CreateConcurrency = 2
	}
	if err := limits.Validate(p.cfg.Snapshots != nil); err != nil {
		return err
	}
	if p.closed.Load() {
		return ErrShuttingDown
	}
	done := make(chan struct{})
	p.root.Send(p.pid, reconfigureRequest{limits: limits, done: done})
	select {
	case <-done:
		return nil
	case <-p.stopped:
		return ErrShuttingDown
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops refilling, destroys every sandbox (warm, creating and
// claimed) and stops the supervisor; it returns when all are gone or ctx
// ends.
func (p *Pool) Shutdown(ctx context.Context) error {
	if !p.closed.CompareAndSwap(false, true) {
		return nil
	}
	done := make(chan struct{})
	p.root.Send(p.pid, shutdownRequest{done: done})
	select {
	case <-done:
		p.root.Stop(p.pid)
		close(p.stopped)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pool shutdown: %d sandboxes left: %w", p.Live(), ctx.Err())
	}
}

// openSnapshot opens the snapshot a sandbox starts from, so a snapshot
// replaced meanwhile does not change what it gets.
func (p *Pool) openSnapshot(name string) (*snapshots.Snapshot, error) {
	if name == "" {
		return nil, nil
	}
	if p.cfg.Snapshots == nil {
		return nil, ErrSnapshotsDisabled
	}
	return p.cfg.Snapshots.Open(name)
}

func closeSnapshot(sn *snapshots.Snapshot) {
	if sn != nil {
		_ = sn.Close()
	}
}
