package actors

import (
	"context"
	"errors"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/sandpool/sandpool/pool/checkpoints"
)

// Idle expiry and the stopping path, which every state can enter.

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
	if s.state != StateClaimed || s.snapshot != nil || s.checkpoint != nil || s.cfg.Settings.IdleTimeout <= 0 {
		return // a running execution, snapshot or checkpoint is never reaped
	}
	if time.Since(s.lastActivity) < s.cfg.Settings.IdleTimeout {
		s.armIdle()
		return
	}
	s.log.Info().Dur("idle_timeout", s.cfg.Settings.IdleTimeout).Msg("idle timeout")
	if s.cfg.Settings.IdleAutoCheckpoint && s.checkpointable() {
		s.emit(statusEvent(StatusCheckpointing))
		s.startCheckpoint(&checkpointJob{cause: causeCheckpoint, idle: true})
		return
	}
	s.stop(causeIdle)
}

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
	s.stopHealth()
	switch cause {
	case causeClient:
		s.emit(statusEvent(StatusKilling), statusEvent(StatusDeleting))
	case causeIdle, causeShutdown:
		s.emit(statusEvent(StatusDeleting))
	}
	if s.exec != nil {
		s.exec.release() // the process dies with the sandbox
	}
	if s.snapshot != nil {
		s.snapshot.cancel() // a kill wins over a long snapshot
	}
	if job := s.checkpoint; job != nil {
		if job.reply != nil {
			job.reply <- ErrNotAttachable
			job.reply = nil
		}
		if job.cancel != nil {
			// onCheckpointDone destroys once the store is no longer
			// written: a kill must not race with a checkpoint's commit.
			job.cancel()
			return
		}
		s.checkpoint = nil
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
	// A killed sandbox's checkpoints go with it; a deleted (idle) or
	// stopped (shutdown) one keeps its latest for a later restore.
	var store *checkpoints.Store
	if s.cause == causeClient {
		store = s.cfg.Checkpoints
	}
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
		if store != nil {
			err = errors.Join(err, store.Remove(s.cfg.ID))
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
		s.emit(ErrorEvents(StatusKillError, "Failed to delete the sandbox: "+msg.err.Error())...)
	}
	if s.exec != nil && s.exec.proc != nil && s.exec.exited == nil {
		// The process dies with the sandbox; give its output a moment to
		// drain so the client gets DONE before DELETED.
		time.AfterFunc(time.Second, func() { s.send(exitGraceOver{}) })
		return
	}
	s.finish(ctx)
}

// finish reports the end to the client and stops the actor. With a
// cancelled snapshot still cleaning up, it waits for it: the client hears
// DELETED only when nothing of the sandbox is left on the host.
func (s *Sandbox) finish(ctx actor.Context) {
	if s.snapshot != nil {
		s.snapshot.finishAfter = true
		return
	}
	if s.exec != nil {
		s.endExecution()
		s.emit(s.doneEvent(exitKilledWithSandbox, ReasonSandboxDeleted))
	}
	s.moveTo(StateStopped)
	s.tellParent(ctx, Ended{PID: s.self})
	switch s.cause {
	case causeClient:
		s.emit(statusEvent(StatusDeleted), statusEvent(StatusKilled))
		s.emit(Event{Gone: true, CloseCode: CloseNormal})
	case causeIdle:
		s.emit(statusEvent(StatusDeleted), Event{Gone: true})
	case causeShutdown:
		s.emit(statusEvent(StatusDeleted), Event{Gone: true, CloseCode: CloseGoingAway})
	case causeCheckpoint:
		s.emit(statusEvent(StatusDeleted), statusEvent(StatusCheckpointed), Event{Gone: true, CloseCode: CloseNormal})
	case causeHandoff:
		s.emit(statusEvent(StatusCheckpointed), Event{Gone: true, CloseCode: CloseNormal})
	default:
		s.emit(Event{Gone: true}) // the client's connection stops sending here
	}
	if s.handoff != nil {
		s.handoff <- nil // the new client's restore may start
		s.handoff = nil
	}
	s.log.Debug().Msg("sandbox deleted")
	ctx.Stop(s.self)
}

// onStopping runs when the actor is stopped by its supervisor (a panic or
// shutdown) without going through stop: the sandbox must not outlive it.
func (s *Sandbox) onStopping() {
	if s.exec != nil {
		s.exec.release()
	}
	s.stopIdle()
	s.stopHealth()
	if s.cancelCreate != nil {
		s.cancelCreate()
	}
	s.reply(ErrShuttingDown)
	if s.snapshot != nil {
		s.snapshot.cancel()
	}
	if job := s.checkpoint; job != nil {
		if job.cancel != nil {
			job.cancel()
		}
		if job.reply != nil {
			job.reply <- ErrNotAttachable
		}
	}
	if s.handoff != nil {
		s.handoff <- nil // the checkpoint was saved
	}
	if s.state != StateStopped {
		s.observe(s.state, StateStopped)
		s.state = StateStopped
	}
	if s.destroyed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.cfg.Runtime.Destroy(ctx, s.cfg.ID); err != nil {
		s.log.Error().Err(err).Msg("destroy on stop")
	}
	s.destroyed = true
}
