package actors

import (
	"context"
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/sandpool/sandpool/pool/snapshots"
)

// Filesystem snapshots. A snapshot runs beside the lifecycle state rather
// than as a state of its own: protocol clients may take one while an
// execution runs, so it overlaps with StateExecuting.

// snapshotJob is the one snapshot a sandbox takes at a time.
type snapshotJob struct {
	name   string
	cancel context.CancelFunc
	// finishAfter is set when the sandbox was destroyed meanwhile: its end
	// is reported once the cancelled snapshot has cleaned up.
	finishAfter bool
}

// Client-facing texts of snapshot errors.
const (
	SnapshotsDisabledMessage   = "Filesystem snapshot is not enabled on the server."
	snapshotInProgressMessage  = "A filesystem snapshot is already in progress."
	snapshotNotRunningTemplate = "Cannot take a filesystem snapshot: %s"
)

func (s *Sandbox) onSnapshot(msg SnapshotFilesystem) {
	fail := func(text string) { s.emit(ErrorEvents(StatusSnapshotError, text)...) }
	switch {
	case s.cfg.Snapshots == nil:
		fail(SnapshotsDisabledMessage)
		return
	case s.snapshot != nil:
		fail(snapshotInProgressMessage)
		return
	case s.checkpoint != nil:
		fail(checkpointingMessage)
		return
	case s.state != StateClaimed && s.state != StateExecuting:
		fail(fmt.Sprintf(snapshotNotRunningTemplate, s.notRunningMessage()))
		return
	}
	if err := snapshots.ValidateName(msg.Name); err != nil {
		fail(capitalize(err.Error()) + ".")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.SnapshotTimeout)
	s.snapshot = &snapshotJob{name: msg.Name, cancel: cancel}
	s.emit(statusEvent(StatusSnapshotCreating))
	id, store, runtime := s.cfg.ID, s.cfg.Snapshots, s.cfg.Runtime
	go func() {
		defer cancel()
		info, err := store.Create(ctx, msg.Name, id, func(ctx context.Context, dest string) error {
			return runtime.SnapshotFilesystem(ctx, id, dest)
		})
		s.send(snapshotDone{info: info, err: err})
	}()
}

func (s *Sandbox) onSnapshotDone(ctx actor.Context, msg snapshotDone) {
	job := s.snapshot
	if job == nil {
		return
	}
	s.snapshot = nil
	if msg.err == nil {
		// Pools built from an older version drain; auto_warm may start one.
		s.tellParent(ctx, SnapshotSaved{Info: msg.info})
	}
	if s.state == StateStopping {
		// The stop cancelled it; the store removed what it had written.
		if job.finishAfter {
			s.finish(ctx)
		}
		return
	}
	s.touch()
	if s.state == StateClaimed {
		s.armIdle()
	}
	defer s.startPendingCheckpoint()
	if msg.err != nil {
		s.log.Warn().Err(msg.err).Str("snapshot", job.name).Msg("filesystem snapshot failed")
		text := fmt.Sprintf("Failed to create filesystem snapshot '%s': %v", job.name, msg.err)
		if errors.Is(msg.err, context.DeadlineExceeded) {
			text = fmt.Sprintf("Filesystem snapshot '%s' took longer than %s and was abandoned.", job.name, s.cfg.SnapshotTimeout)
		}
		s.emit(ErrorEvents(StatusSnapshotError, text)...)
		return
	}
	s.log.Info().Str("snapshot", job.name).Int64("bytes", msg.info.Size).Msg("filesystem snapshot created")
	s.emit(statusEvent(StatusSnapshotCreated))
}

// capitalize makes an error text a sentence for the client.
func capitalize(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
