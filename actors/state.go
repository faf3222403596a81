package actors

import "fmt"

// State is where a sandbox is in its lifecycle (design.md "Sandbox
// lifecycle").
type State int

const (
	// StateNew is before the actor started; only Config.OnState sees it.
	StateNew State = -1
	// StateWarming: runsc is creating the sandbox.
	StateWarming State = iota - 1
	// StateReady: created and waiting in a pool for a client.
	StateReady
	// StateClaimed: owned by a client (attached or not), nothing running.
	StateClaimed
	// StateExecuting: an execution is running.
	StateExecuting
	// StateCheckpointing: runsc is saving the sandbox; it stops after a
	// successful checkpoint and returns to claimed after a failed one.
	StateCheckpointing
	// StateStopping: the sandbox is being destroyed.
	StateStopping
	// StateStopped: destroyed; the actor is ending.
	StateStopped
	// StateFailed: creation failed (the runtime left nothing); the actor
	// is ending.
	StateFailed
)

var stateNames = [...]string{"warming", "ready", "claimed", "executing", "checkpointing", "stopping", "stopped", "failed"}

func (s State) String() string {
	if s == StateNew {
		return "new"
	}
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// transitions lists every legal move. A used sandbox never goes back to
// ready; every live state may stop (a kill is honoured from anywhere).
var transitions = map[State][]State{
	StateWarming:       {StateReady, StateClaimed, StateFailed, StateStopping},
	StateReady:         {StateClaimed, StateStopping},
	StateClaimed:       {StateExecuting, StateCheckpointing, StateStopping},
	StateExecuting:     {StateClaimed, StateStopping},
	StateCheckpointing: {StateClaimed, StateStopping},
	StateStopping:      {StateStopped},
	StateFailed:        {StateStopped},
}

// TransitionError is an illegal move, which is always a bug in the caller.
type TransitionError struct{ From, To State }

func (e *TransitionError) Error() string {
	return fmt.Sprintf("illegal sandbox transition %s -> %s", e.From, e.To)
}

// next checks the move from -> to.
func next(from, to State) error {
	for _, allowed := range transitions[from] {
		if allowed == to {
			return nil
		}
	}
	return &TransitionError{From: from, To: to}
}
