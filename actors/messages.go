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
	// Attach makes sink the sandbox's one client.
	Attach struct{ Sink Sink }
	// Detach forgets sink if it is still the attached one.
	Detach struct{ Sink Sink }
	// Shutdown destroys the sandbox because the server is stopping.
	Shutdown struct{}
	// SnapshotFilesystem saves the sandbox's filesystem under Name.
	SnapshotFilesystem struct{ Name string }
)

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
	exitGraceOver struct{}
)
