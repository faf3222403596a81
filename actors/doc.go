// Package actors implements the sandbox actor: one protoactor actor per
// sandbox whose explicit state machine serialises every lifecycle message
// (create, execute, stdin, kill, idle expiry, attach and detach).
//
// Concurrency: all state lives inside the actor and is touched only by
// Receive. Slow work (runsc calls, reading output, writing stdin) runs in
// goroutines that report back to the actor as messages. Events leave through
// a Sink, whose Send must never block.
package actors
