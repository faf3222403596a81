package actors

import "github.com/asynkron/protoactor-go/actor"

// Ref is how the transport talks to one sandbox: its id, its token (kept on
// the host, returned once to the creating client) and its actor.
type Ref struct {
	ID    string
	Token string
	PID   *actor.PID
	Root  *actor.RootContext
	// Warm says the sandbox came ready from a pool (the create was a hit).
	Warm bool
	// Done is closed once the actor has stopped (nil: never known).
	Done <-chan struct{}
}

// Send delivers a client request to the sandbox actor.
func (r *Ref) Send(msg any) { r.Root.Send(r.PID, msg) }

// Done is closed once the actor has stopped and takes no more messages.
func (s *Sandbox) Done() <-chan struct{} { return s.stopped }

// Token is the sandbox's secret, for the supervisor to hand to its creator.
func (s *Sandbox) Token() string { return s.cfg.Token }
