package actors

import (
	"time"

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
	destroyDone  struct{ err error }
	snapshotDone struct {
		info snapshots.Info
		err  error
	}
	exitGraceOver struct{}
)
