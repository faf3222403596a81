package actors

import (
	"context"
	"io"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/sandpool/sandpool/runsc"
)

// Executions: start, output, stdin, kill, timeout and exit of the one
// process a sandbox runs at a time.

func (s *Sandbox) onExecute(msg Execute) {
	argv, ok := lookupLanguage(msg.Language)
	switch {
	case !ok:
		s.emit(ErrorEvents(StatusUnsupportedLang, UnsupportedLanguageMessage(msg.Language))...)
		if s.exec == nil {
			s.emit(s.doneEvent(0, ""))
		}
		return
	case !msg.HasCode:
		s.emit(ErrorEvents(StatusExecError, "The execute request has no code.")...)
		return
	case s.state == StateExecuting:
		s.emit(ErrorEvents(StatusExecError, "An execution is already in progress.")...)
		return
	case s.checkpoint != nil:
		s.emit(ErrorEvents(StatusExecError, checkpointingMessage)...)
		return
	case s.state != StateClaimed:
		s.emit(ErrorEvents(StatusExecError, s.notRunningMessage())...)
		return
	}
	s.moveTo(StateExecuting)
	s.stopIdle()
	s.seq++
	e := &execution{seq: s.seq, stdin: make(chan []byte, stdinQueue), window: newWindow(s.cfg.OutputWindow)}
	s.exec = e
	s.parked = nil // the client moved on from an execution it never resumed
	// Only a sandbox that can be checkpointed pays for executions whose
	// background jobs survive a restore.
	spec := runsc.ProcessSpec{Args: argv(msg.Code), Cwd: msg.Cwd, SurviveRestore: s.cfg.Settings.EnableCheckpoint}
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
		s.emit(ErrorEvents(StatusExecError, "Failed to start the execution: "+msg.err.Error())...)
		return
	}
	e.proc = msg.proc
	if s.state == StateStopping {
		return // the process dies with the sandbox; DONE follows
	}
	if !e.detached && s.sink != nil {
		// A detached one gets its RUNNING on reconnect.
		s.emitExec(e, statusEvent(StatusExecRunning))
	}
	if e.pendingKill != "" {
		s.startKill(e, e.pendingKill)
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
			s.send(execOutput{seq: seq, kind: kind, text: text, credit: w.acquire(len(text) + eventCost)})
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
	ev.Offset = s.exec.nextOffset(msg.kind, len(msg.text))
	s.emitExec(s.exec, ev)
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
		// What runsc reports for a process whose container vanished
		// varies (128 here); the process was killed with its sandbox.
		code, reason = exitKilledWithSandbox, ReasonSandboxDeleted
	}
	s.endExecution()
	s.emitExec(e, s.doneEvent(code, reason))
	if e.detached {
		s.parked = e // a reconnect still gets its end
		s.log.Info().Int64("dropped_bytes", e.replay.dropped).Msg("execution ended while detached")
	}
	if s.state == StateStopping && s.destroyed {
		s.finish(ctx)
		return
	}
	s.startPendingCheckpoint()
}

func (s *Sandbox) endExecution() {
	e := s.exec
	if e == nil {
		return
	}
	e.release()
	s.exec = nil
	if s.state == StateExecuting {
		s.moveTo(StateClaimed)
		s.touch()
		s.armIdle()
	}
}

// exitKilledWithSandbox is the exit code of an execution ended by the
// deletion of its sandbox: 128+SIGKILL, as runsc delete --force kills it.
const exitKilledWithSandbox = 128 + 9

func (s *Sandbox) doneEvent(code int, reason string) Event {
	return Event{Kind: EventStatus, Status: StatusExecDone, ExitCode: &code, Reason: reason}
}

// --- stdin and kill ---

func (s *Sandbox) onStdin(msg Stdin) {
	e := s.exec
	switch {
	case e == nil:
		s.emit(ErrorEvents(StatusExecError, "No execution is running to receive stdin.")...)
	case e.stdin == nil:
		s.emit(ErrorEvents(StatusStdinError, "Stdin of the execution is closed.")...)
	default:
		select {
		case e.stdin <- []byte(msg.Data):
		default:
			s.emit(ErrorEvents(StatusStdinError, "Stdin is full: the process is not reading it.")...)
		}
	}
}

func (s *Sandbox) onCloseStdin() {
	e := s.exec
	if e == nil {
		s.emit(ErrorEvents(StatusExecError, "No execution is running to close stdin of.")...)
		return
	}
	e.closeStdin()
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
	if s.exec == nil {
		s.emit(statusEvent(StatusForceKilled))
		return
	}
	s.kill(s.exec, ReasonKilled)
}

func (s *Sandbox) onTimeout(msg execTimedOut) {
	if e := s.exec; e != nil && e.seq == msg.seq {
		s.kill(e, ReasonTimeout)
	}
}

// kill kills the execution's process group now, or as soon as the process
// has started.
func (s *Sandbox) kill(e *execution, reason string) {
	if e.proc == nil {
		if e.pendingKill == "" {
			e.pendingKill = reason
		}
		return
	}
	s.startKill(e, reason)
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
			for _, ev := range ErrorEvents(StatusForceKillError, "Failed to kill the process: "+msg.err.Error()) {
				s.emitExec(e, ev)
			}
		} else {
			s.emitExec(e, statusEvent(StatusForceKilled))
		}
	}
	if e.exited != nil {
		s.finishExecution(ctx)
	}
}
