package actors

import "time"

// Status strings of the wire protocol (protocol.md §5).
const (
	StatusCreating         = "SANDBOX_CREATING"
	StatusRunning          = "SANDBOX_RUNNING"
	StatusCreationError    = "SANDBOX_CREATION_ERROR"
	StatusDeleting         = "SANDBOX_DELETING"
	StatusDeleted          = "SANDBOX_DELETED"
	StatusKilling          = "SANDBOX_KILLING"
	StatusKilled           = "SANDBOX_KILLED"
	StatusKillError        = "SANDBOX_KILL_ERROR"
	StatusError            = "SANDBOX_ERROR"
	StatusExecRunning      = "SANDBOX_EXECUTION_RUNNING"
	StatusExecDone         = "SANDBOX_EXECUTION_DONE"
	StatusExecError        = "SANDBOX_EXECUTION_ERROR"
	StatusUnsupportedLang  = "SANDBOX_EXECUTION_UNSUPPORTED_LANGUAGE_ERROR"
	StatusForceKilled      = "SANDBOX_EXECUTION_FORCE_KILLED"
	StatusForceKillError   = "SANDBOX_EXECUTION_FORCE_KILL_ERROR"
	StatusStdinError       = "SANDBOX_STDIN_ERROR"
	StatusNotFound         = "SANDBOX_NOT_FOUND"
	StatusPermissionDenial = "SANDBOX_PERMISSION_DENIAL_ERROR"
	StatusInUse            = "SANDBOX_IN_USE"
	StatusSnapshotCreating = "SANDBOX_FILESYSTEM_SNAPSHOT_CREATING"
	StatusSnapshotCreated  = "SANDBOX_FILESYSTEM_SNAPSHOT_CREATED"
	StatusSnapshotError    = "SANDBOX_FILESYSTEM_SNAPSHOT_ERROR"
	StatusRestoring        = "SANDBOX_RESTORING"
	StatusRestoreError     = "SANDBOX_RESTORE_ERROR"
	StatusCheckpointing    = "SANDBOX_CHECKPOINTING"
	StatusCheckpointed     = "SANDBOX_CHECKPOINTED"
	StatusCheckpointError  = "SANDBOX_CHECKPOINT_ERROR"
	StatusExecInProgress   = "SANDBOX_EXECUTION_IN_PROGRESS_ERROR"
	StatusLockReleaseReq   = "SANDBOX_LOCK_RELEASE_REQUESTED"
)

// Event kinds (the wire's "event" key).
const (
	EventStatus    = "status_update"
	EventSandboxID = "sandbox_id"
	EventStdout    = "stdout"
	EventStderr    = "stderr"
	EventError     = "error"
)

// Reasons an execution was ended by the server.
const (
	ReasonKilled         = "killed"
	ReasonTimeout        = "timeout"
	ReasonSandboxDeleted = "sandbox_deleted"
)

// WebSocket close codes of protocol.md §7.
const (
	CloseNormal    = 1000
	CloseGoingAway = 1001
	CloseNotFound  = 1011
	CloseError     = 4000
)

// Event is one message for the client attached to a sandbox.
type Event struct {
	Kind      string
	Status    string
	Message   string
	Data      string
	ExitCode  *int
	Reason    string
	SandboxID string
	Token     string
	// DroppedBytes is how much output of an execution was dropped while
	// no client was attached (on the RUNNING that resumes it; additive).
	DroppedBytes int64
	// Pool is "hit" or "miss" on the RUNNING of a create (an additive key:
	// whether a warm sandbox served it).
	Pool string
	// Offset is where an output chunk's Data starts in its stream (stdout
	// or stderr) of the execution, in bytes of UTF-8 (an additive key): a
	// client that reconnects skips what it already has of a chunk replayed
	// because its delivery was never confirmed.
	Offset int64
	// CloseCode, when set, asks the transport to close the connection with
	// it after sending this event.
	CloseCode int
	// Gone marks the last event of a sandbox: it no longer exists.
	Gone bool

	credit *credit
	// seq is the execution an output, FORCE_KILLED or DONE event belongs
	// to (0: none), so undelivered ones can be replayed.
	seq int
}

// Replayable reports whether the event belongs to an execution (output,
// FORCE_KILLED, DONE): a Drainer keeps such events until the client has
// confirmed them, since a reconnect replays them; others it may drop once
// written.
func (e Event) Replayable() bool { return e.seq != 0 }

// Release returns the event's output bytes to the execution's flow window;
// a Sink calls it once the client has the event (for a replayable one: has
// confirmed it) or the event is dropped, so a client that stops reading
// holds back the process instead of growing memory.
func (e Event) Release() {
	if e.credit != nil {
		e.credit.release()
	}
}

// Sink receives a sandbox's events for one client. Send must not block.
type Sink interface {
	Send(Event)
}

// Drainer is a Sink that can give back the events it accepted but whose
// delivery its client never confirmed (the client dropped), in order; it
// is asked once, on Detach, after which it takes no more events.
type Drainer interface {
	Unsent() []Event
}

// Prober is a Sink that can check its client is still there. Probe waits up
// to timeout for a sign of life; a client that gives none is treated as
// dead and disconnected, and Probe returns once its undelivered events
// can be taken with Unsent.
type Prober interface {
	Probe(timeout time.Duration) bool
}

func statusEvent(status string) Event { return Event{Kind: EventStatus, Status: status} }

// ErrorEvents is an error status with its message, followed by the `error`
// event that protocol.md requires after every error status.
func ErrorEvents(status, message string) []Event {
	return []Event{
		{Kind: EventStatus, Status: status, Message: message},
		{Kind: EventError, Message: message},
	}
}
