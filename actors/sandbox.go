package actors

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/sandpool/sandpool/pool/checkpoints"
	"github.com/sandpool/sandpool/pool/snapshots"
	"github.com/sandpool/sandpool/runsc"
)

// Errors reported to whoever waits for a sandbox's creation.
var (
	// ErrShuttingDown means the server stopped before the sandbox was ready.
	ErrShuttingDown = errors.New("server is shutting down")
	// ErrNotReady answers a Claim to a sandbox that is no longer ready.
	ErrNotReady = errors.New("sandbox is not ready to be claimed")
	// ErrInvalidToken answers an Attach with the wrong token.
	ErrInvalidToken = errors.New("invalid sandbox token")
	// ErrInUse answers an Attach while another client is attached.
	ErrInUse = errors.New("sandbox is in use by another connection")
	// ErrNotAttachable answers an Attach to a sandbox no client owns (a
	// warm one) or one that is going away.
	ErrNotAttachable = errors.New("sandbox cannot be attached")
)

// language is a protocol language and the interpreter that runs its code.
type language struct {
	name string
	argv func(code string) []string
}

// languages in the order error messages list them.
var languages = []language{
	{"python", func(code string) []string { return []string{"python3", "-c", code} }},
	{"bash", func(code string) []string { return []string{"bash", "-c", code} }},
}

// lookupLanguage returns the command line for code in the named language.
func lookupLanguage(name string) (func(string) []string, bool) {
	for _, l := range languages {
		if l.name == name {
			return l.argv, true
		}
	}
	return nil, false
}

// SupportedLanguage reports whether name is a language sandboxes run.
func SupportedLanguage(name string) bool {
	_, ok := lookupLanguage(name)
	return ok
}

// UnsupportedLanguageMessage is the protocol's text for a bad language.
func UnsupportedLanguageMessage(name string) string {
	names := make([]string, len(languages))
	for i, l := range languages {
		names[i] = l.name
	}
	return fmt.Sprintf("Unsupported language: '%s'. Supported languages are: %s", name, strings.Join(names, ", "))
}

// Settings are a client's per-sandbox choices.
type Settings struct {
	// IdleTimeout reaps the sandbox after this much inactivity; 0 = never.
	IdleTimeout time.Duration
	// Snapshot names the filesystem snapshot to start from ("" = the base
	// rootfs).
	Snapshot string
	// EnableCheckpoint allows checkpoints (and a restore on attach).
	EnableCheckpoint bool
	// EnableHandoff lets an attach with the token take the sandbox over
	// from its client (by a checkpoint and a restore).
	EnableHandoff bool
	// IdleAutoCheckpoint checkpoints instead of deleting on idle expiry.
	IdleAutoCheckpoint bool
}

// Config builds one sandbox actor.
type Config struct {
	ID       string
	Token    string
	Runtime  runsc.Runtime
	Settings Settings
	// Sink is the client attached from the start (may be nil).
	Sink Sink
	// Created, when set, receives the creation result exactly once
	// (buffered, 1), before the Created message goes to the parent.
	Created chan<- error
	Logger  zerolog.Logger
	// CreateTimeout bounds runsc's create (default 60 s).
	CreateTimeout time.Duration
	// OutputWindow bounds an execution's unsent output (default
	// DefaultOutputWindow).
	OutputWindow int
	// Snapshots stores filesystem snapshots; nil disables them.
	Snapshots *snapshots.Store
	// SnapshotTimeout bounds one filesystem snapshot (default 10 min).
	SnapshotTimeout time.Duration
	// From, when set, is the snapshot the sandbox starts from. The actor
	// owns it and closes it once runsc has read it.
	From *snapshots.Snapshot
	// Warm makes a pool sandbox: once created it waits in StateReady,
	// with no client and no idle timeout, until a Claim or a Retire.
	Warm bool
	// HealthInterval is how often a ready sandbox checks that its
	// processes still run (default 2 s); a dead one destroys itself.
	HealthInterval time.Duration
	// OnState, when set, is called on every state change (from StateNew
	// at start); it must not block.
	OnState func(from, to State)
	// TokenHash is checkpoints.HashToken(Token), filled in by New; a
	// restored sandbox has only the hash (its token is never stored).
	TokenHash string
	// Checkpoints stores checkpoints; nil disables them.
	Checkpoints *checkpoints.Store
	// CheckpointTimeout bounds one checkpoint (default 5 min).
	CheckpointTimeout time.Duration
	// Restore, when set, makes the sandbox from this checkpoint instead
	// of creating it; it starts claimed by Sink and sends it RUNNING.
	Restore *checkpoints.Meta
	// ReplayBuffer bounds the output of one execution kept while no
	// client is attached (default DefaultReplayBuffer); beyond it the
	// oldest output is dropped and counted.
	ReplayBuffer int
}

// DefaultReplayBuffer is the output of one execution kept for a reconnect.
const DefaultReplayBuffer = 8 << 20

// stopCause says why a sandbox is being destroyed; it picks the events the
// client sees.
type stopCause int

const (
	causeClient     stopCause = iota // kill_sandbox
	causeIdle                        // idle timeout
	causeShutdown                    // server stopping
	causeFailed                      // creation failed
	causeRetired                     // a ready sandbox the pool let go
	causeDied                        // a ready sandbox whose processes died
	causeCheckpoint                  // checkpointed: a later attach restores it
	causeHandoff                     // checkpointed for another client
)

// Sandbox is the actor of one sandbox.
type Sandbox struct {
	cfg   Config
	log   zerolog.Logger
	state State
	sink  Sink
	// stopped is closed once the actor has stopped: a message sent to it
	// after that is lost, so whoever awaits an answer watches it too.
	stopped     chan struct{}
	stoppedOnce sync.Once

	self *actor.PID
	root *actor.RootContext

	cancelCreate context.CancelFunc
	lastActivity time.Time
	idleTimer    *time.Timer
	healthTimer  *time.Timer
	// died is why a ready sandbox's processes are gone.
	died error

	seq      int
	exec     *execution
	snapshot *snapshotJob
	// parked is an execution that ended (or whose last events were not
	// delivered) while no client was attached: a reconnect replays it.
	parked *execution
	// checkpoint is the checkpoint in flight or waiting for the running
	// execution to end (a handoff kills it first).
	checkpoint *checkpointJob

	cause     stopCause
	destroyed bool
	// handoff is the attach waiting for this sandbox's handoff checkpoint
	// to be over.
	handoff chan<- error
}

// execution is the one running execution of a sandbox.
type execution struct {
	seq    int
	proc   runsc.Process
	stdin  chan []byte
	window *window
	timer  *time.Timer

	// pendingKill is the reason of a kill (kill_process or the timeout)
	// that came before the process started.
	pendingKill string
	killing     bool   // a kill is in flight: DONE waits for its outcome
	reason      string // why the server ended it, for DONE
	exited      *execExited

	// detached: no client receives the output; it waits in replay until
	// a client attaches and sends reconnect.
	detached bool
	replay   replayBuffer

	// written counts the output bytes (UTF-8) emitted so far per stream,
	// stdout and stderr: the Offset of the next chunk.
	written [2]int64
}

// nextOffset gives the offset of a chunk of n bytes of stream kind and
// advances it.
func (e *execution) nextOffset(kind string, n int) int64 {
	i := 0
	if kind == EventStderr {
		i = 1
	}
	off := e.written[i]
	e.written[i] += int64(n)
	return off
}

// release stops feeding the execution: no more stdin, no timeout, and no
// reader waits for a client anymore. It may run more than once.
func (e *execution) release() {
	e.closeStdin()
	if e.timer != nil {
		e.timer.Stop()
	}
	e.window.close()
}

// closeStdin sends EOF to the process once its queued stdin is written.
func (e *execution) closeStdin() {
	if e.stdin != nil {
		close(e.stdin)
		e.stdin = nil
	}
}

// stdinQueue bounds stdin chunks waiting for a process that is not reading.
const stdinQueue = 256

// New returns the actor for cfg; spawn it with Props.
func New(cfg Config) *Sandbox {
	if cfg.CreateTimeout <= 0 {
		cfg.CreateTimeout = 60 * time.Second
	}
	if cfg.OutputWindow <= 0 {
		cfg.OutputWindow = DefaultOutputWindow
	}
	if cfg.SnapshotTimeout <= 0 {
		cfg.SnapshotTimeout = 10 * time.Minute
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 2 * time.Second
	}
	if cfg.CheckpointTimeout <= 0 {
		cfg.CheckpointTimeout = 5 * time.Minute
	}
	if cfg.ReplayBuffer <= 0 {
		cfg.ReplayBuffer = DefaultReplayBuffer
	}
	if cfg.TokenHash == "" {
		cfg.TokenHash = checkpoints.HashToken(cfg.Token)
	}
	if cfg.Restore != nil {
		cfg.Settings = SettingsOf(*cfg.Restore)
	}
	return &Sandbox{
		cfg:     cfg,
		log:     cfg.Logger.With().Str("sandbox_id", cfg.ID).Logger(),
		sink:    cfg.Sink,
		stopped: make(chan struct{}),
	}
}

// Props spawns the actor with a middleware that logs panics with a stack.
func (s *Sandbox) Props() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return s },
		actor.WithReceiverMiddleware(LogPanics(s.log)))
}

// Receive is the state machine.
func (s *Sandbox) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		s.self, s.root = ctx.Self(), ctx.ActorSystem().Root
		s.observe(StateNew, StateWarming)
		s.startCreate()
	case *actor.Stopping:
		s.onStopping()
	case *actor.Stopped:
		s.stoppedOnce.Do(func() { close(s.stopped) })

	case createDone:
		s.onCreated(ctx, msg)
	case Claim:
		s.onClaim(msg)
	case Retire:
		s.onRetire(msg)
	case healthCheck:
		s.onHealthCheck()
	case healthResult:
		s.onHealthResult(ctx, msg)
	case Attach:
		s.onAttach(msg)
	case Detach:
		s.onDetach(msg)
	case Reconnect:
		s.onReconnect()
	case Checkpoint:
		s.touch()
		s.onCheckpoint()
	case HandOff:
		s.onHandOff(msg)
	case checkpointDone:
		s.onCheckpointDone(msg)
	case Execute:
		s.touch()
		s.onExecute(msg)
	case execStarted:
		s.onExecStarted(msg)
	case execOutput:
		s.onOutput(msg)
	case execExited:
		s.onExecExited(ctx, msg)
	case Stdin:
		s.touch()
		s.onStdin(msg)
	case CloseStdin:
		s.touch()
		s.onCloseStdin()
	case KillProcess:
		s.touch()
		s.onKillProcess()
	case killDone:
		s.onKillDone(ctx, msg)
	case execTimedOut:
		s.onTimeout(msg)
	case SnapshotFilesystem:
		s.touch()
		s.onSnapshot(msg)
	case snapshotDone:
		s.onSnapshotDone(ctx, msg)
	case idleCheck:
		s.onIdleCheck()
	case KillSandbox:
		s.stop(causeClient)
	case Shutdown:
		s.stop(causeShutdown)
	case destroyDone:
		s.onDestroyed(ctx, msg)
	case exitGraceOver:
		if s.state == StateStopping && s.destroyed {
			s.finish(ctx)
		}
	}
}

func (s *Sandbox) send(msg any) { s.root.Send(s.self, msg) }

func (s *Sandbox) emit(events ...Event) {
	for _, ev := range events {
		if s.sink == nil {
			ev.Release()
			continue
		}
		s.sink.Send(ev)
	}
}

func (s *Sandbox) moveTo(to State) {
	if err := next(s.state, to); err != nil {
		// A bug, not a client error: log it loudly and move anyway so the
		// sandbox can still be destroyed.
		s.log.Error().Err(err).Msg("state machine")
	}
	s.observe(s.state, to)
	s.state = to
}

func (s *Sandbox) observe(from, to State) {
	if s.cfg.OnState != nil {
		s.cfg.OnState(from, to)
	}
}

// tellParent reports to the supervisor (none when spawned at the root, as
// in tests).
func (s *Sandbox) tellParent(ctx actor.Context, msg any) {
	if parent := ctx.Parent(); parent != nil {
		ctx.Send(parent, msg)
	}
}

// --- creation ---

func (s *Sandbox) startCreate() {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CreateTimeout)
	s.cancelCreate = cancel
	from := s.cfg.From
	s.cfg.From = nil
	go func() {
		defer cancel()
		if meta := s.cfg.Restore; meta != nil {
			s.send(createDone{err: s.restore(ctx, *meta)})
			return
		}
		var opts runsc.CreateOptions
		if from != nil {
			opts.RootfsTar = from.Path()
			defer from.Close()
		}
		err := s.cfg.Runtime.Create(ctx, s.cfg.ID, opts)
		var tarErr *runsc.RootfsTarError
		if from != nil && errors.As(err, &tarErr) {
			// The client learns which snapshot is unusable and why.
			err = &snapshots.CorruptError{Name: from.Info.Name, Reason: tarErr.Cause}
		}
		s.send(createDone{err: err})
	}()
}

func (s *Sandbox) onCreated(ctx actor.Context, msg createDone) {
	s.cancelCreate = nil
	// Every branch puts the result on cfg.Created first, where the parent
	// reads it.
	defer s.tellParent(ctx, Created{PID: s.self})
	switch {
	case msg.err != nil:
		// Runtime.Create leaves nothing behind when it fails (cancelled
		// by a kill included): there is nothing to destroy.
		s.destroyed = true
		if s.state == StateStopping {
			s.reply(ErrShuttingDown)
		} else {
			s.moveTo(StateFailed)
			s.log.Warn().Err(msg.err).Msg("create failed")
			s.reply(fmt.Errorf("create sandbox: %w", msg.err))
			s.cause = causeFailed
		}
		s.finish(ctx)
	case s.state == StateStopping:
		// Killed while creating, but the create won the race.
		s.reply(ErrShuttingDown)
		s.destroyInBackground()
	case s.cfg.Warm:
		s.moveTo(StateReady)
		s.armHealth()
		s.reply(nil)
		s.log.Debug().Msg("warm sandbox ready")
	default:
		s.moveTo(StateClaimed)
		s.touch()
		s.armIdle()
		s.log.Debug().Msg("sandbox running")
		if s.cfg.Restore != nil {
			s.restored()
		}
		s.reply(nil)
	}
}

func (s *Sandbox) reply(err error) {
	if s.cfg.Created != nil {
		s.cfg.Created <- err
		s.cfg.Created = nil
	}
}
