// Package pool is the supervisor of every sandbox actor: it creates
// sandboxes under a global cap, supervises them (a failed sandbox is stopped
// and cleaned up, never restarted), and stops them all at shutdown.
//
// Concurrency: Pool's methods are safe for concurrent use; they talk to the
// supervisor actor with messages that carry reply channels.
package pool

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/sandpool/sandpool/actors"
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
	// MaxSandboxes caps live sandboxes, creating ones included.
	MaxSandboxes  int
	CreateTimeout time.Duration
	Logger        zerolog.Logger
	// Snapshots is the filesystem snapshot store; nil disables snapshots.
	Snapshots *snapshots.Store
	// SnapshotTimeout bounds one filesystem snapshot (default 10 min).
	SnapshotTimeout time.Duration
}

// Pool creates and supervises sandboxes.
type Pool struct {
	cfg  Config
	root *actor.RootContext
	pid  *actor.PID
	live atomic.Int64
	// closed is set by Shutdown: the supervisor may be gone, so Create
	// must not wait for its answer.
	closed atomic.Bool
	// stopped is closed once the supervisor is gone; a request that raced
	// with Shutdown stops waiting on it.
	stopped chan struct{}
}

// New spawns the supervisor actor.
func New(cfg Config) (*Pool, error) {
	if cfg.System == nil || cfg.Runtime == nil {
		return nil, fmt.Errorf("pool: actor system and runtime are required")
	}
	if cfg.MaxSandboxes <= 0 {
		return nil, fmt.Errorf("pool: max sandboxes must be positive, got %d", cfg.MaxSandboxes)
	}
	p := &Pool{cfg: cfg, root: cfg.System.Root, stopped: make(chan struct{})}
	sup := &supervisor{pool: p, children: map[string]*actor.PID{}}
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

// Live is the number of sandboxes that exist or are being created.
func (p *Pool) Live() int { return int(p.live.Load()) }

// Create starts a sandbox for a client (from settings.Snapshot, if set) and
// waits until it runs. If ctx ends first, the sandbox is killed.
func (p *Pool) Create(ctx context.Context, settings actors.Settings, sink actors.Sink) (*actors.Ref, error) {
	if p.closed.Load() {
		return nil, ErrShuttingDown
	}
	from, err := p.openSnapshot(settings.Snapshot)
	if err != nil {
		return nil, err
	}
	reply := make(chan createResult, 1)
	p.root.Send(p.pid, createRequest{settings: settings, sink: sink, from: from, reply: reply})
	var res createResult
	select {
	case res = <-reply:
	case <-p.stopped:
		// The supervisor is gone; nobody took the snapshot over.
		closeSnapshot(from)
		return nil, ErrShuttingDown
	case <-ctx.Done():
		// The supervisor still answers: the reply says whether an actor
		// took the snapshot over.
		go func() {
			if res := <-reply; res.err == nil {
				res.ref.Send(actors.KillSandbox{})
			}
		}()
		return nil, ctx.Err()
	}
	if res.err != nil {
		return nil, res.err
	}
	select {
	case err := <-res.created:
		if err != nil {
			return nil, err
		}
		return res.ref, nil
	case <-ctx.Done():
		res.ref.Send(actors.KillSandbox{})
		return nil, ctx.Err()
	}
}

// Shutdown destroys every sandbox and stops the supervisor; it returns when
// all are gone or ctx ends.
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

type createRequest struct {
	settings actors.Settings
	sink     actors.Sink
	// from is the opened snapshot to start from; the sandbox actor closes
	// it, or the supervisor when no actor is made.
	from  *snapshots.Snapshot
	reply chan<- createResult
}

type createResult struct {
	ref     *actors.Ref
	created <-chan error
	err     error
}

type shutdownRequest struct{ done chan struct{} }

// supervisor is the parent actor of every sandbox actor.
type supervisor struct {
	pool     *Pool
	children map[string]*actor.PID
	stopping bool
	waiters  []chan struct{}
}

func (s *supervisor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case createRequest:
		res := s.create(ctx, msg)
		if res.err != nil {
			closeSnapshot(msg.from)
		}
		msg.reply <- res
	case *actor.Terminated:
		s.forget(msg.Who)
	case shutdownRequest:
		s.stopping = true
		s.waiters = append(s.waiters, msg.done)
		for _, pid := range s.children {
			ctx.Send(pid, actors.Shutdown{})
		}
		s.maybeDone()
	}
}

func (s *supervisor) create(ctx actor.Context, req createRequest) createResult {
	cfg := s.pool.cfg
	switch {
	case s.stopping:
		return createResult{err: ErrShuttingDown}
	case len(s.children) >= cfg.MaxSandboxes:
		return createResult{err: fmt.Errorf("%w: the server runs its maximum of %d sandboxes; try again later", ErrNoCapacity, cfg.MaxSandboxes)}
	}
	created := make(chan error, 1)
	id := actors.NewID()
	sb := actors.New(actors.Config{
		ID:              id,
		Token:           actors.NewToken(),
		Runtime:         cfg.Runtime,
		Settings:        req.settings,
		Sink:            req.sink,
		Created:         created,
		Logger:          cfg.Logger,
		CreateTimeout:   cfg.CreateTimeout,
		Snapshots:       cfg.Snapshots,
		SnapshotTimeout: cfg.SnapshotTimeout,
		From:            req.from,
	})
	pid, err := ctx.SpawnNamed(sb.Props(), id)
	if err != nil {
		return createResult{err: fmt.Errorf("spawn sandbox actor: %w", err)}
	}
	s.children[pid.Id] = pid
	s.pool.live.Store(int64(len(s.children)))
	return createResult{ref: &actors.Ref{ID: id, Token: sb.Token(), PID: pid, Root: ctx.ActorSystem().Root}, created: created}
}

func (s *supervisor) forget(pid *actor.PID) {
	delete(s.children, pid.Id)
	s.pool.live.Store(int64(len(s.children)))
	s.maybeDone()
}

func (s *supervisor) maybeDone() {
	if !s.stopping || len(s.children) > 0 {
		return
	}
	for _, w := range s.waiters {
		close(w)
	}
	s.waiters = nil
}
