package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/sandpool/sandpool/pool/snapshots"
	"github.com/sandpool/sandpool/runsc"
)

// Client requests. The transport decodes them; the actor checks them
// against its state.
type (
	// Execute runs code in the sandbox.
	Execute struct {
		Language string
		Code     string
		// HasCode is false when the request carried no code at all.
		HasCode bool
		Env     map[string]string
		Cwd     string
		// Timeout, when set, kills the execution after this long.
		Timeout time.Duration
	}
	// Stdin writes raw text to the running execution.
	Stdin struct{ Data string }
	// CloseStdin sends EOF to the running execution.
	CloseStdin struct{}
	// KillProcess kills the running execution's whole process group.
	KillProcess struct{}
	// KillSandbox destroys the sandbox on the client's request.
	KillSandbox struct{}
	// Attach makes Sink the sandbox's one client if Token is the
	// sandbox's and no other client is attached (Replace names an
	// attached client known to be dead, which Sink replaces). On success
	// the sandbox sends SANDBOX_RUNNING to Sink. Reply always gets an
	// answer.
	Attach struct {
		Sink    Sink
		Token   string
		Replace Sink
		Reply   chan<- AttachResult
	}
	// Detach forgets Sink if it is still the attached one; output it
	// accepted but did not deliver is kept for a reconnect. Done, when
	// set, is closed once the sandbox took what it needs from Sink.
	Detach struct {
		Sink Sink
		Done chan<- struct{}
	}
	// Reconnect resumes the output of an execution that ran (or ended)
	// while no client was attached: what was not delivered, then live.
	Reconnect struct{}
	// Checkpoint saves the sandbox (memory, processes, files) and stops
	// it; a later attach restores it.
	Checkpoint struct{}
	// HandOff checkpoints the sandbox for another client that attached
	// with the token: the current client is told, a running execution
	// is killed. Reply gets nil once the checkpoint is saved and the
	// sandbox gone, or why not.
	HandOff struct{ Reply chan<- error }
	// Shutdown destroys the sandbox because the server is stopping.
	Shutdown struct{}
	// SnapshotFilesystem saves the sandbox's filesystem under Name.
	SnapshotFilesystem struct{ Name string }
)

// AttachResult answers Attach.
type AttachResult struct {
	// Err is nil, ErrInvalidToken, ErrInUse or ErrNotAttachable.
	Err error
	// Current is the attached client when Err is ErrInUse (nil while a
	// checkpoint runs).
	Current Sink
	// Handoff says the sandbox may be taken over with HandOff.
	Handoff bool
}

// Pool requests, from the supervisor to a sandbox it warmed.
type (
	// Claim hands a ready sandbox to a client: Settings and Sink apply from
	// now on. Reply gets nil, or ErrNotReady if the sandbox is no longer
	// ready (it died or was retired meanwhile).
	Claim struct {
		Settings Settings
		Sink     Sink
		Reply    chan<- error
	}
	// Retire destroys a sandbox that is still ready (too old, stale
	// snapshot, pool shrunk, died); a claimed one ignores it. After it the
	// pool sends the sandbox no more claims.
	Retire struct{ Reason string }
)

// Reports from a sandbox actor to its parent.
type (
	// Created says runsc's create finished; the result is already on
	// Config.Created. The actor's Terminated can overtake this message
	// (system messages go first), so a parent that needs the result when
	// a creating child terminates reads it from that channel too.
	Created struct{ PID *actor.PID }
	// Ended says the sandbox is gone from the host; it is told before the
	// client hears DELETED, so the parent frees its slot before the client
	// can ask for another (the actor's Terminated comes later).
	Ended struct{ PID *actor.PID }
	// Died says a ready sandbox's processes are gone; it answers claims
	// with ErrNotReady and waits for the Retire that destroys it.
	Died struct {
		PID *actor.PID
		Err error
	}
	// SnapshotSaved says a filesystem snapshot was committed under
	// Info.Name, replacing any older version.
	SnapshotSaved struct{ Info snapshots.Info }
)

// Internal messages: results of work done off the mailbox.
type (
	createDone  struct{ err error }
	execStarted struct {
		seq  int
		proc runsc.Process
		err  error
	}
	execOutput struct {
		seq    int
		kind   string
		text   string
		credit *credit
	}
	execExited struct {
		seq  int
		code int
		err  error
	}
	killDone struct {
		seq int
		err error
	}
	execTimedOut struct{ seq int }
	idleCheck    struct{}
	healthCheck  struct{}
	healthResult struct{ err error }
	destroyDone  struct{ err error }
	snapshotDone struct {
		info snapshots.Info
		err  error
	}
	exitGraceOver  struct{}
	checkpointDone struct {
		err error
		// alive says whether the sandbox still runs after a failure.
		alive bool
	}
)
