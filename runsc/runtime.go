package runsc

import (
	"context"
	"errors"
	"io"
)

// Sentinel errors callers check with errors.Is.
var (
	// ErrNotFound means runsc has no container with that id.
	ErrNotFound = errors.New("container not found")
	// ErrMissingFeature means the runsc binary is too old for sandpool.
	ErrMissingFeature = errors.New("runsc lacks a required feature")
	// ErrBadRootfsTar means runsc could not restore a sandbox's filesystem
	// from the tar it was given (corrupt or unreadable); the error is a
	// *RootfsTarError.
	ErrBadRootfsTar = errors.New("filesystem snapshot cannot be restored")
	// ErrSandboxDead means the sandbox's runsc-sandbox process is gone
	// (killed, crashed) although runsc may still list the container.
	ErrSandboxDead = errors.New("sandbox process is gone")
	// ErrBadImage means a checkpoint image is missing, incomplete or
	// unreadable.
	ErrBadImage = errors.New("checkpoint image cannot be restored")
	// ErrNoAgent means the rootfs lacks sandpool-agent, which every
	// sandbox runs as its init and every execution through.
	ErrNoAgent = errors.New("no sandpool agent")
)

// RootfsTarError is a Create that failed because runsc could not unpack
// CreateOptions.RootfsTar. It matches ErrBadRootfsTar.
type RootfsTarError struct {
	ID string
	// Cause is runsc's reason, for example "archive/tar: invalid tar header".
	Cause string
}

func (e *RootfsTarError) Error() string {
	return "create sandbox " + e.ID + ": " + ErrBadRootfsTar.Error() + ": " + e.Cause
}

func (e *RootfsTarError) Is(target error) bool { return target == ErrBadRootfsTar }

// Runtime is what the sandbox actor needs from gVisor. The real one is
// *Runner; unit tests use *Fake.
type Runtime interface {
	// Create creates and starts a sandbox whose init process keeps it alive.
	Create(ctx context.Context, id string, opts CreateOptions) error
	// Exec starts a process in a running sandbox. It returns once the
	// process was started; output is read from the Process.
	Exec(ctx context.Context, id string, spec ProcessSpec) (Process, error)
	// Destroy force-deletes the sandbox and everything runsc keeps for it.
	// Destroying a sandbox that does not exist is not an error.
	Destroy(ctx context.Context, id string) error
	// List returns the ids of every container under this runtime's root.
	List(ctx context.Context) ([]string, error)
	// SnapshotFilesystem writes the sandbox's root filesystem changes (the
	// overlay's upper layer) as a tar to dest, an existing file it
	// truncates. A sandbox created with CreateOptions.RootfsTar set to that
	// file starts with exactly those changes.
	SnapshotFilesystem(ctx context.Context, id, dest string) error
	// Alive reports whether the sandbox's processes still run: nil, or an
	// error matching ErrSandboxDead. It is cheap (no runsc call), so a
	// pool can check its idle sandboxes every few seconds.
	Alive(ctx context.Context, id string) error
	// Checkpoint saves the sandbox's memory, processes and files into
	// imageDir (an existing, empty directory) and stops it; the container
	// exists until Destroy. It returns the sandbox's OCI spec (its
	// config.json, byte for byte), which Restore needs.
	Checkpoint(ctx context.Context, id, imageDir string) (spec []byte, err error)
	// Restore creates and starts sandbox id from a checkpoint image and
	// the spec Checkpoint returned: its processes continue where they
	// were. On failure nothing is left behind; an image that cannot be
	// restored gives an error matching ErrBadImage.
	Restore(ctx context.Context, id, imageDir string, spec []byte) error
}

// CreateOptions are per-sandbox creation settings.
type CreateOptions struct {
	// Env is added to the base environment of every process.
	Env []string
	// RootfsTar, when set, is the absolute path of a filesystem snapshot
	// (from SnapshotFilesystem) the sandbox starts from. runsc opens it
	// before Create returns; it is not needed afterwards.
	RootfsTar string
}

// ProcessSpec describes one execution inside a sandbox.
type ProcessSpec struct {
	Args []string
	// Env entries ("K=V") override the sandbox's base environment.
	Env []string
	// Cwd defaults to /root.
	Cwd string
	// SurviveRestore has the sandbox's init start the program (through
	// the agent's relay) instead of runsc exec, so the program and its
	// background jobs are not an exec session, which gVisor kills on a
	// restore. It costs a second process start per execution (1.65x a
	// raw runsc exec in docs/benchmarks.md), so only sandboxes that can
	// be checkpointed ask for it.
	SurviveRestore bool
}

// Process is a running execution. Stdout and Stderr reach EOF once the
// process and everything holding its output pipes are gone (or shortly after
// the process exits, so an orphan cannot hold the stream open forever).
type Process interface {
	Stdin() io.WriteCloser
	Stdout() io.Reader
	Stderr() io.Reader
	// Wait blocks until the process exits and returns its exit code, with
	// signal deaths reported as 128+signal. Exactly one caller may Wait.
	Wait() (int, error)
	// Kill sends SIGKILL to the process's whole process group inside the
	// sandbox, so children and background jobs die too.
	Kill(ctx context.Context) error
}
