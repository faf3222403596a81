package actors

import (
	"fmt"
	"runtime/debug"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
)

// LogPanics is a receiver middleware that logs a panic with its stack (the
// library logs panics without one) and re-panics for the supervisor.
func LogPanics(log zerolog.Logger) actor.ReceiverMiddleware {
	return func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
			defer func() {
				if r := recover(); r != nil {
					log.Error().Interface("panic", r).Str("stack", string(debug.Stack())).
						Str("message_type", fmt.Sprintf("%T", env.Message)).Msg("actor panicked")
					panic(r)
				}
			}()
			next(c, env)
		}
	}
}
