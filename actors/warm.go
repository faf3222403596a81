package actors

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// A warm sandbox waits in StateReady until the pool hands it to a client
// (Claim) or lets it go (Retire). Meanwhile it checks that it is alive, so a
// claim never returns a dead sandbox for long.

// onClaim applies the client's settings: they are per request, so they never
// defeat the warm pool.
func (s *Sandbox) onClaim(msg Claim) {
	if s.state != StateReady || s.died != nil {
		msg.Reply <- ErrNotReady
		return
	}
	s.stopHealth()
	// Every client setting applies; the snapshot is what it was made from.
	snapshot := s.cfg.Settings.Snapshot
	s.cfg.Settings = msg.Settings
	s.cfg.Settings.Snapshot = snapshot
	s.sink = msg.Sink
	s.moveTo(StateClaimed)
	s.touch()
	s.armIdle()
	s.log.Debug().Msg("warm sandbox claimed")
	msg.Reply <- nil
}

func (s *Sandbox) armHealth() {
	s.healthTimer = time.AfterFunc(s.cfg.HealthInterval, func() { s.send(healthCheck{}) })
}

func (s *Sandbox) stopHealth() {
	if s.healthTimer != nil {
		s.healthTimer.Stop()
		s.healthTimer = nil
	}
}

func (s *Sandbox) onHealthCheck() {
	if s.state != StateReady {
		return
	}
	id, runtime := s.cfg.ID, s.cfg.Runtime
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.send(healthResult{err: runtime.Alive(ctx, id)})
	}()
}

// onHealthResult reports a dead sandbox to the pool and waits for its
// Retire: only the pool knows whether a Claim is already on its way here,
// and such a Claim must still get its answer (ErrNotReady).
func (s *Sandbox) onHealthResult(ctx actor.Context, msg healthResult) {
	if s.state != StateReady || s.died != nil {
		return
	}
	if msg.err == nil {
		s.armHealth()
		return
	}
	s.log.Warn().Err(msg.err).Msg("warm sandbox died")
	s.died = msg.err
	if ctx.Parent() == nil {
		s.stop(causeDied)
		return
	}
	s.tellParent(ctx, Died{PID: s.self, Err: msg.err})
}

// onRetire destroys a sandbox that is still ready; a claimed one belongs to
// its client.
func (s *Sandbox) onRetire(msg Retire) {
	if s.state != StateReady {
		return
	}
	if s.died != nil {
		s.stop(causeDied)
		return
	}
	s.log.Debug().Str("reason", msg.Reason).Msg("retiring warm sandbox")
	s.stop(causeRetired)
}
