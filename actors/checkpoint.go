package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/sandpool/sandpool/pool/checkpoints"
)

// Checkpoints: a sandbox created with enable_checkpoint can be saved
// (memory, processes, files) and stopped, by its client, by idle expiry
// (enable_idle_timeout_auto_checkpoint) or for a handoff to another
// client; a later attach restores it from the store under the same id.

// Client-facing texts of checkpoint errors.
const (
	CheckpointsDisabledMessage  = "Checkpointing is not enabled on the server."
	checkpointNotEnabledMessage = "Checkpointing is not enabled for this sandbox: create it with enable_checkpoint."
	checkpointExecMessage       = "Cannot checkpoint while an execution is in progress."
	checkpointSnapshotMessage   = "Cannot checkpoint while a filesystem snapshot is in progress."
	checkpointBusyMessage       = "A checkpoint of this sandbox is already in progress."
	checkpointingMessage        = "The sandbox is being checkpointed."
)

// checkpointJob is the sandbox's one checkpoint.
type checkpointJob struct {
	// cause is causeCheckpoint or causeHandoff.
	cause stopCause
	// idle: started by idle expiry; if it fails the sandbox is deleted
	// as idle expiry would.
	idle bool
	// reply is the handoff's waiting attach.
	reply chan<- error
	// cancel is set once runsc runs; until then the job waits for the
	// execution a handoff killed.
	cancel context.CancelFunc
}

func (s *Sandbox) checkpointable() bool {
	return s.cfg.Checkpoints != nil && s.cfg.Settings.EnableCheckpoint
}

func (s *Sandbox) handoffAllowed() bool {
	return s.checkpointable() && s.cfg.Settings.EnableHandoff
}

// checkpointError reports a failed checkpoint; protocol clients treat it as
// fatal, so the connection closes (the sandbox stays, if it runs).
func (s *Sandbox) checkpointError(text string) {
	events := ErrorEvents(StatusCheckpointError, text)
	events[len(events)-1].CloseCode = CloseError
	s.emit(events...)
}

func (s *Sandbox) onCheckpoint() {
	busy := func(text string) {
		s.emit(statusEvent(StatusCheckpointing))
		s.emit(ErrorEvents(StatusExecInProgress, text)...)
	}
	switch {
	case s.cfg.Checkpoints == nil:
		s.checkpointError(CheckpointsDisabledMessage)
	case !s.cfg.Settings.EnableCheckpoint:
		s.checkpointError(checkpointNotEnabledMessage)
	case s.checkpoint != nil:
		busy(checkpointBusyMessage)
	case s.exec != nil:
		busy(checkpointExecMessage)
	case s.snapshot != nil:
		busy(checkpointSnapshotMessage)
	case s.state != StateClaimed:
		s.checkpointError("Cannot checkpoint: " + s.notRunningMessage())
	default:
		s.emit(statusEvent(StatusCheckpointing))
		s.startCheckpoint(&checkpointJob{cause: causeCheckpoint})
	}
}

// onHandOff checkpoints the sandbox for the client that attached with its
// token; a running execution is killed first (its pipes end at the host).
func (s *Sandbox) onHandOff(msg HandOff) {
	if !s.handoffAllowed() || s.checkpoint != nil || (s.state != StateClaimed && s.state != StateExecuting) {
		msg.Reply <- ErrInUse
		return
	}
	s.log.Info().Msg("handoff: checkpointing for another client")
	s.emit(statusEvent(StatusLockReleaseReq), statusEvent(StatusCheckpointing))
	s.checkpoint = &checkpointJob{cause: causeHandoff, reply: msg.Reply}
	if s.exec != nil {
		s.kill(s.exec, ReasonKilled)
		return // finishExecution starts it
	}
	s.startPendingCheckpoint()
}

// startPendingCheckpoint starts a waiting checkpoint once nothing runs.
func (s *Sandbox) startPendingCheckpoint() {
	job := s.checkpoint
	if job == nil || job.cancel != nil || s.exec != nil || s.snapshot != nil || s.state != StateClaimed {
		return
	}
	s.startCheckpoint(job)
}

func (s *Sandbox) startCheckpoint(job *checkpointJob) {
	s.checkpoint = job
	s.moveTo(StateCheckpointing)
	s.stopIdle()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CheckpointTimeout)
	job.cancel = cancel
	meta := s.meta()
	id, store, runtime := s.cfg.ID, s.cfg.Checkpoints, s.cfg.Runtime
	go func() {
		defer cancel()
		_, err := store.Save(ctx, meta, func(ctx context.Context, dir string) ([]byte, error) {
			return runtime.Checkpoint(ctx, id, dir)
		})
		alive := false
		if err != nil {
			alive = runtime.Alive(context.Background(), id) == nil
		}
		s.send(checkpointDone{err: err, alive: alive})
	}()
}

// meta is what a restore needs besides the image; the store adds the
// spec and the image.
func (s *Sandbox) meta() checkpoints.Meta {
	st := s.cfg.Settings
	return checkpoints.Meta{
		ID:                 s.cfg.ID,
		TokenHash:          s.cfg.TokenHash,
		IdleTimeout:        st.IdleTimeout.Seconds(),
		EnableHandoff:      st.EnableHandoff,
		IdleAutoCheckpoint: st.IdleAutoCheckpoint,
		Snapshot:           st.Snapshot,
	}
}

// SettingsOf are the client's settings of a checkpointed sandbox.
func SettingsOf(m checkpoints.Meta) Settings {
	return Settings{
		IdleTimeout:        time.Duration(m.IdleTimeout * float64(time.Second)),
		Snapshot:           m.Snapshot,
		EnableCheckpoint:   true,
		EnableHandoff:      m.EnableHandoff,
		IdleAutoCheckpoint: m.IdleAutoCheckpoint,
	}
}

func (s *Sandbox) onCheckpointDone(msg checkpointDone) {
	job := s.checkpoint
	if job == nil {
		return
	}
	s.checkpoint = nil
	if s.state == StateStopping {
		// Killed meanwhile: the store is no longer written, so the kill
		// may now remove what it holds.
		s.destroyInBackground()
		return
	}
	if msg.err == nil {
		s.log.Info().Msg("sandbox checkpointed")
		s.cause = job.cause
		if job.cause != causeHandoff {
			s.emit(statusEvent(StatusDeleting))
		}
		s.moveTo(StateStopping)
		s.handoff = job.reply
		s.destroyInBackground()
		return
	}
	s.log.Warn().Err(msg.err).Bool("alive", msg.alive).Msg("checkpoint failed")
	if job.reply != nil {
		job.reply <- fmt.Errorf("checkpoint for handoff: %w", msg.err)
	}
	s.checkpointError("Failed to checkpoint the sandbox: " + msg.err.Error())
	switch {
	case !msg.alive:
		s.stop(causeDied)
	case job.idle:
		s.moveTo(StateClaimed)
		s.stop(causeIdle) // as if it had no auto-checkpoint
	default:
		s.moveTo(StateClaimed)
		s.touch()
		s.armIdle()
	}
}

// restore runs on the create goroutine: runsc restores the image, and the
// attach is recorded (for retention) before the actor can checkpoint again.
func (s *Sandbox) restore(ctx context.Context, meta checkpoints.Meta) error {
	store := s.cfg.Checkpoints
	// runsc restores a damaged memory image without noticing.
	if err := store.Verify(meta); err != nil {
		return err
	}
	if err := s.cfg.Runtime.Restore(ctx, s.cfg.ID, store.ImageDir(meta), meta.Spec); err != nil {
		return err
	}
	if err := store.Touch(s.cfg.ID, time.Now()); err != nil {
		s.log.Warn().Err(err).Msg("record attach time")
	}
	return nil
}

// restored finishes a restore: the attach that asked for it gets RUNNING.
func (s *Sandbox) restored() {
	s.emit(statusEvent(StatusRunning))
	s.log.Info().Msg("sandbox restored")
}
