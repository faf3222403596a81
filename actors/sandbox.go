package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/sandpool/sandpool/runsc"
)

// Errors reported to whoever waits for a sandbox's creation.
var (
	// ErrShuttingDown means the server stopped before the sandbox was ready.
	ErrShuttingDown = errors.New("server is shutting down")
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
}

// Config builds one sandbox actor.
type Config struct {
	ID       string
	Token    string
	Runtime  runsc.Runtime
	Settings Settings
	// Sink is the client attached from the start (may be nil).
	Sink Sink
	// Created receives the creation result exactly once (buffered, 1).
	Created chan<- error
	Logger  zerolog.Logger
	// CreateTimeout bounds runsc's create (default 60 s).
	CreateTimeout time.Duration
	// OutputWindow bounds an execution's unsent output (default 4 MiB).
	OutputWindow int
}

// stopCause says why a sandbox is being destroyed; it picks the events the
// client sees.
type stopCause int

const (
	causeClient   stopCause = iota // kill_sandbox
	causeIdle                      // idle timeout
	causeShutdown                  // server stopping
	causeFailed                    // creation failed
)

// Sandbox is the actor of one sandbox.
type Sandbox struct {
	cfg   Config
	log   zerolog.Logger
	state State
	sink  Sink

	self *actor.PID
	root *actor.RootContext

	cancelCreate context.CancelFunc
	lastActivity time.Time
	idleTimer    *time.Timer

	seq  int
	exec *execution

	cause     stopCause
	destroyed bool
}

// execution is the one running execution of a sandbox.
type execution struct {
	seq    int
	proc   runsc.Process
	stdin  chan []byte
	window *window
	timer  *time.Timer

	killWanted bool   // kill_process arrived before the process started
	killing    bool   // a kill is in flight: DONE waits for its outcome
	reason     string // why the server ended it, for DONE
	exited     *execExited
}

// stdinQueue bounds stdin chunks waiting for a process that is not reading.
const stdinQueue = 256

// New returns the actor for cfg; spawn it with Props.
func New(cfg Config) *Sandbox {
	if cfg.CreateTimeout <= 0 {
		cfg.CreateTimeout = 60 * time.Second
	}
	if cfg.OutputWindow <= 0 {
		cfg.OutputWindow = 4 << 20
	}
	return &Sandbox{
		cfg:  cfg,
		log:  cfg.Logger.With().Str("sandbox_id", cfg.ID).Logger(),
		sink: cfg.Sink,
	}
}

// Props spawns the actor with a middleware that logs panics with a stack.
func (s *Sandbox) Props() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return s },
		actor.WithReceiverMiddleware(LogPanics(s.log)))
}

// State reports the current state; for tests, read only after the actor
// stopped or from inside Receive.
func (s *Sandbox) State() State { return s.state }

// Receive is the state machine.
func (s *Sandbox) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		s.self, s.root = ctx.Self(), ctx.ActorSystem().Root
		s.startCreate()
	case *actor.Stopping:
		s.onStopping()

	case createDone:
		s.onCreated(ctx, msg)
	case Attach:
		s.sink = msg.Sink
	case Detach:
		if s.sink == msg.Sink {
			s.sink = nil
		}
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
	s.state = to
}

// --- creation ---

func (s *Sandbox) startCreate() {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CreateTimeout)
	s.cancelCreate = cancel
	go func() {
		defer cancel()
		err := s.cfg.Runtime.Create(ctx, s.cfg.ID, runsc.CreateOptions{})
		s.send(createDone{err: err})
	}()
}

func (s *Sandbox) onCreated(ctx actor.Context, msg createDone) {
	s.cancelCreate = nil
	switch {
	case s.state == StateStopping:
		// Killed while creating: the runtime cleaned up a failed create;
		// a create that won the race is destroyed now.
		s.reply(ErrShuttingDown)
		s.destroyInBackground()
	case msg.err != nil:
		s.moveTo(StateFailed)
		s.log.Warn().Err(msg.err).Msg("create failed")
		s.reply(fmt.Errorf("create sandbox: %w", msg.err))
		s.cause = causeFailed
		s.moveTo(StateStopping)
		s.destroyInBackground()
	default:
		s.moveTo(StateClaimed)
		s.touch()
		s.armIdle()
		s.log.Debug().Msg("sandbox running")
		s.reply(nil)
	}
}

func (s *Sandbox) reply(err error) {
	if s.cfg.Created != nil {
		s.cfg.Created <- err
		s.cfg.Created = nil
	}
}

// --- execution ---

func (s *Sandbox) onExecute(msg Execute) {
	argv, ok := lookupLanguage(msg.Language)
	switch {
	case !ok:
		s.emit(errorEvents(StatusUnsupportedLang, UnsupportedLanguageMessage(msg.Language))...)
		if s.exec == nil {
			s.emit(s.doneEvent(0, ""))
		}
		return
	case !msg.HasCode:
		s.emit(errorEvents(StatusExecError, "The execute request has no code.")...)
		return
	case s.state == StateExecuting:
		s.emit(errorEvents(StatusExecError, "An execution is already in progress.")...)
		return
	case s.state != StateClaimed:
		s.emit(errorEvents(StatusExecError, s.notRunningMessage())...)
		return
	}
	s.moveTo(StateExecuting)
	s.stopIdle()
	s.seq++
	e := &execution{seq: s.seq, stdin: make(chan []byte, stdinQueue), window: newWindow(s.cfg.OutputWindow)}
	s.exec = e
	spec := runsc.ProcessSpec{Args: argv(msg.Code), Cwd: msg.Cwd}
	for k, v := range msg.Env {
		spec.Env = append(spec.Env, k+"="+v)
	}
	sort.Strings(spec.Env)
	if msg.Timeout > 0 {
		seq := e.seq
		e.timer = time.AfterFunc(msg.Timeout, func() { s.send(execTimedOut{seq: seq}) })
	}
	go s.run(e.seq, spec, e.stdin, e.window)
}

// run owns one process from start to exit: it feeds stdin, streams the
// output and reports the exit, whatever became of the actor meanwhile, so a
// process never outlives its pipes' readers.
func (s *Sandbox) run(seq int, spec runsc.ProcessSpec, stdin <-chan []byte, w *window) {
	proc, err := s.cfg.Runtime.Exec(context.Background(), s.cfg.ID, spec)
	s.send(execStarted{seq: seq, proc: proc, err: err})
	if err != nil {
		return
	}
	go writeStdin(proc.Stdin(), stdin)
	s.collect(seq, proc, w)
}

func (s *Sandbox) notRunningMessage() string {
	if s.state == StateStopping || s.state == StateStopped {
		return "The sandbox has been deleted."
	}
	return "The sandbox is not running."
}

func (s *Sandbox) onExecStarted(msg execStarted) {
	e := s.exec
	if e == nil || e.seq != msg.seq {
		return
	}
	if msg.err != nil {
		s.log.Warn().Err(msg.err).Msg("exec failed")
		s.endExecution()
		s.emit(errorEvents(StatusExecError, "Failed to start the execution: "+msg.err.Error())...)
		return
	}
	e.proc = msg.proc
	if s.state == StateStopping {
		return // the process dies with the sandbox; DONE follows
	}
	s.emit(statusEvent(StatusExecRunning))
	if e.killWanted {
		s.startKill(e, ReasonKilled)
	}
}

// collect streams both outputs to the actor, then reports the exit once the
// process is gone and its output drained, so DONE always comes last.
func (s *Sandbox) collect(seq int, proc runsc.Process, w *window) {
	done := make(chan struct{}, 2)
	for _, stream := range []struct {
		kind string
		r    io.Reader
	}{{EventStdout, proc.Stdout()}, {EventStderr, proc.Stderr()}} {
		go func() {
			s.readOutput(seq, stream.kind, stream.r, w)
			done <- struct{}{}
		}()
	}
	code, err := proc.Wait()
	<-done
	<-done
	s.send(execExited{seq: seq, code: code, err: err})
}

func (s *Sandbox) readOutput(seq int, kind string, r io.Reader, w *window) {
	buf := make([]byte, 32<<10)
	var dec utf8Decoder
	forward := func(text string) {
		if text != "" {
			s.send(execOutput{seq: seq, kind: kind, text: text, credit: w.acquire(len(text))})
		}
	}
	for {
		n, err := r.Read(buf)
		if n > 0 {
			forward(dec.decode(buf[:n]))
		}
		if err != nil {
			break
		}
	}
	forward(dec.flush())
}

func (s *Sandbox) onOutput(msg execOutput) {
	ev := Event{Kind: msg.kind, Data: msg.text, credit: msg.credit}
	// Once the sandbox is being deleted, what still arrives is runsc's
	// complaint about the vanished container, not the program's output.
	if s.exec == nil || s.exec.seq != msg.seq || s.state == StateStopping {
		ev.Release()
		return
	}
	s.touch()
	s.emit(ev)
}

func (s *Sandbox) onExecExited(ctx actor.Context, msg execExited) {
	e := s.exec
	if e == nil || e.seq != msg.seq {
		return
	}
	if msg.err != nil {
		s.log.Warn().Err(msg.err).Msg("wait for execution")
	}
	e.exited = &msg
	if e.killing {
		return // onKillDone reports FORCE_KILLED first, then DONE
	}
	s.finishExecution(ctx)
}

// finishExecution sends DONE and returns the sandbox to claimed (or lets a
// pending stop complete).
func (s *Sandbox) finishExecution(ctx actor.Context) {
	e := s.exec
	code := e.exited.code
	if code < 0 {
		code = 1
	}
	reason := e.reason
	if s.state == StateStopping {
		reason = ReasonSandboxDeleted
	}
	s.endExecution()
	s.emit(s.doneEvent(code, reason))
	if s.state == StateStopping && s.destroyed {
		s.finish(ctx)
	}
}

func (s *Sandbox) endExecution() {
	e := s.exec
	if e == nil {
		return
	}
	if e.timer != nil {
		e.timer.Stop()
	}
	if e.stdin != nil {
		close(e.stdin)
		e.stdin = nil
	}
	e.window.close()
	s.exec = nil
	if s.state == StateExecuting {
		s.moveTo(StateClaimed)
		s.touch()
		s.armIdle()
	}
}

func (s *Sandbox) doneEvent(code int, reason string) Event {
	return Event{Kind: EventStatus, Status: StatusExecDone, ExitCode: &code, Reason: reason}
}

// --- stdin and kill ---

func (s *Sandbox) onStdin(msg Stdin) {
	e := s.exec
	switch {
	case e == nil:
		s.emit(errorEvents(StatusExecError, "No execution is running to receive stdin.")...)
	case e.stdin == nil:
		s.emit(errorEvents(StatusStdinError, "Stdin of the execution is closed.")...)
	default:
		select {
		case e.stdin <- []byte(msg.Data):
		default:
			s.emit(errorEvents(StatusStdinError, "Stdin is full: the process is not reading it.")...)
		}
	}
}

func (s *Sandbox) onCloseStdin() {
	e := s.exec
	if e == nil {
		s.emit(errorEvents(StatusExecError, "No execution is running to close stdin of.")...)
		return
	}
	if e.stdin != nil {
		close(e.stdin)
		e.stdin = nil
	}
}

func writeStdin(w io.WriteCloser, chunks <-chan []byte) {
	defer w.Close()
	for b := range chunks {
		if _, err := w.Write(b); err != nil {
			for range chunks { // the process is gone; drop the rest
			}
			return
		}
	}
}

func (s *Sandbox) onKillProcess() {
	e := s.exec
	if e == nil {
		s.emit(statusEvent(StatusForceKilled))
		return
	}
	if e.proc == nil {
		e.killWanted = true
		return
	}
	s.startKill(e, ReasonKilled)
}

func (s *Sandbox) onTimeout(msg execTimedOut) {
	if e := s.exec; e != nil && e.seq == msg.seq && e.proc != nil && !e.killing {
		s.startKill(e, ReasonTimeout)
	}
}

func (s *Sandbox) startKill(e *execution, reason string) {
	if e.killing {
		return
	}
	e.killing, e.reason = true, reason
	seq, proc := e.seq, e.proc
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.send(killDone{seq: seq, err: proc.Kill(ctx)})
	}()
}

func (s *Sandbox) onKillDone(ctx actor.Context, msg killDone) {
	e := s.exec
	if e == nil || e.seq != msg.seq {
		return
	}
	e.killing = false
	if e.reason == ReasonKilled {
		if msg.err != nil {
			s.log.Warn().Err(msg.err).Msg("kill process")
			s.emit(errorEvents(StatusForceKillError, "Failed to kill the process: "+msg.err.Error())...)
		} else {
			s.emit(statusEvent(StatusForceKilled))
		}
	}
	if e.exited != nil {
		s.finishExecution(ctx)
	}
}

// --- idle timeout ---

// touch records activity: a client message, output, the end of an
// execution.
func (s *Sandbox) touch() { s.lastActivity = time.Now() }

func (s *Sandbox) armIdle() {
	s.stopIdle()
	if s.cfg.Settings.IdleTimeout <= 0 {
		return
	}
	wait := time.Until(s.lastActivity.Add(s.cfg.Settings.IdleTimeout))
	// Our own timer, not protoactor's SetReceiveTimeout (racy in this
	// version).
	s.idleTimer = time.AfterFunc(max(wait, 0), func() { s.send(idleCheck{}) })
}

func (s *Sandbox) stopIdle() {
	if s.idleTimer != nil {
		s.idleTimer.Stop()
		s.idleTimer = nil
	}
}

func (s *Sandbox) onIdleCheck() {
	if s.state != StateClaimed || s.cfg.Settings.IdleTimeout <= 0 {
		return // a running execution is never reaped
	}
	if time.Since(s.lastActivity) < s.cfg.Settings.IdleTimeout {
		s.armIdle()
		return
	}
	s.log.Info().Dur("idle_timeout", s.cfg.Settings.IdleTimeout).Msg("idle timeout")
	s.stop(causeIdle)
}

// --- stopping ---

// stop destroys the sandbox from any state; it answers within the runtime's
// delete time, even while creating or executing.
func (s *Sandbox) stop(cause stopCause) {
	if s.state == StateStopping || s.state == StateStopped {
		if cause == causeClient {
			s.emit(statusEvent(StatusKilling))
		}
		return
	}
	s.cause = cause
	wasWarming := s.state == StateWarming
	s.moveTo(StateStopping)
	s.stopIdle()
	switch cause {
	case causeClient:
		s.emit(statusEvent(StatusKilling), statusEvent(StatusDeleting))
	case causeIdle, causeShutdown:
		s.emit(statusEvent(StatusDeleting))
	}
	if e := s.exec; e != nil {
		e.window.close() // readers must not wait for a client anymore
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	if wasWarming {
		// The create goroutine returns promptly once cancelled; its
		// createDone then destroys whatever got created.
		s.cancelCreate()
		return
	}
	s.destroyInBackground()
}

func (s *Sandbox) destroyInBackground() {
	go func() {
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = s.cfg.Runtime.Destroy(ctx, s.cfg.ID)
			cancel()
			if err == nil {
				break
			}
			time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
		}
		s.send(destroyDone{err: err})
	}()
}

func (s *Sandbox) onDestroyed(ctx actor.Context, msg destroyDone) {
	s.destroyed = true
	if msg.err != nil {
		s.log.Error().Err(msg.err).Msg("destroy sandbox")
	}
	if s.cause == causeClient && msg.err != nil {
		s.emit(errorEvents(StatusKillError, "Failed to delete the sandbox: "+msg.err.Error())...)
	}
	if s.exec != nil && s.exec.proc != nil && s.exec.exited == nil {
		// The process dies with the sandbox; give its output a moment to
		// drain so the client gets DONE before DELETED.
		time.AfterFunc(time.Second, func() { s.send(exitGraceOver{}) })
		return
	}
	s.finish(ctx)
}

// finish reports the end to the client and stops the actor.
func (s *Sandbox) finish(ctx actor.Context) {
	if e := s.exec; e != nil {
		code := 137
		if e.exited != nil {
			code = e.exited.code
		}
		s.endExecution()
		s.emit(s.doneEvent(code, ReasonSandboxDeleted))
	}
	s.moveTo(StateStopped)
	switch s.cause {
	case causeClient:
		s.emit(statusEvent(StatusDeleted), statusEvent(StatusKilled))
		s.emit(Event{Gone: true, CloseCode: CloseNormal})
	case causeIdle:
		s.emit(statusEvent(StatusDeleted), Event{Gone: true})
	case causeShutdown:
		s.emit(statusEvent(StatusDeleted), Event{Gone: true, CloseCode: CloseGoingAway})
	}
	s.log.Debug().Msg("sandbox deleted")
	ctx.Stop(s.self)
}

// onStopping runs when the actor is stopped by its supervisor (a panic or
// shutdown) without going through stop: the sandbox must not outlive it.
func (s *Sandbox) onStopping() {
	s.endExecution()
	s.stopIdle()
	if s.cancelCreate != nil {
		s.cancelCreate()
	}
	s.reply(ErrShuttingDown)
	if s.destroyed || s.state == StateStopped {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.cfg.Runtime.Destroy(ctx, s.cfg.ID); err != nil {
		s.log.Error().Err(err).Msg("destroy on stop")
	}
	s.destroyed = true
}
