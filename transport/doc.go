// Package transport serves the wire protocol: WebSocket /create and
// /attach, and the HTTP endpoints. It decodes client frames into actor
// messages, routes them to the sandbox actor, and writes the actor's events
// back; it never touches runsc.
//
// Concurrency: each WebSocket connection has a reader goroutine, a handler
// goroutine that owns the connection's state, and a writer goroutine that
// alone writes to the socket (events, pings and the close frame).
package transport
