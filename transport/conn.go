package transport

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/sandpool/sandpool/actors"
)

// hardMessageLimit makes gorilla drop a connection whose frame is absurdly
// large; frames between MaxMessageBytes and this are discarded unread.
const hardMessageLimit = 256 << 20

// writeTimeout bounds one socket write; a client that cannot take a frame in
// this time is dead.
const writeTimeout = 10 * time.Second

// outboundEvents bounds the events queued for one client: every output
// chunk the actor's flow window lets through, plus room for status events.
// It only fills for a client that stopped reading status events too.
var outboundEvents = actors.MaxOutputEvents(actors.DefaultOutputWindow) + 1024

// frame is one client message, or why it could not be read.
type frame struct {
	data []byte
	err  *protocolError
}

// conn is one WebSocket connection; it is the Sink of its sandbox.
type conn struct {
	srv   *Server
	ws    *websocket.Conn
	log   zerolog.Logger
	queue *eventQueue
	// acks holds what was written but not yet confirmed by the client.
	acks *unconfirmed
	ref  *actors.Ref

	frames     chan frame
	readerDone chan struct{}
	writerDone chan struct{}
	stop       chan struct{}
	stopOnce   sync.Once

	// gone is set once the sandbox reported its end.
	gone atomic.Bool
	// alive gets a token for every frame, and for the pong of the probe
	// under way (probe holds its ping's payload): Probe's sign of life. A
	// pong to another ping may answer one sent long before the probe.
	alive  chan struct{}
	probe  atomic.Pointer[string]
	probes atomic.Uint64
}

func (s *Server) newConn(ws *websocket.Conn) *conn {
	c := &conn{
		srv:        s,
		ws:         ws,
		log:        s.log,
		frames:     make(chan frame),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		stop:       make(chan struct{}),
		alive:      make(chan struct{}, 1),
		acks:       newUnconfirmed(),
	}
	c.queue = newEventQueue(outboundEvents, func() {
		c.log.Warn().Msg("client too slow: outbound queue full, closing")
		_ = ws.UnderlyingConn().Close()
	})
	ws.SetReadLimit(hardMessageLimit)
	ws.SetPongHandler(func(payload string) error {
		if p := c.probe.Load(); p != nil && *p == payload {
			c.signalAlive()
		} else {
			c.acks.confirm(payload)
		}
		return c.extendDeadline()
	})
	go c.readLoop()
	go c.writeLoop()
	return c
}

// Send implements actors.Sink.
func (c *conn) Send(ev actors.Event) {
	if ev.Gone {
		c.gone.Store(true)
	}
	c.queue.Send(ev)
}

func (c *conn) signalAlive() {
	select {
	case c.alive <- struct{}{}:
	default:
	}
}

// Probe implements actors.Prober: a ping must be answered (or a frame
// arrive) within timeout. A client that stays silent is disconnected, and
// Probe returns once the writer has stopped, so Unsent holds everything
// that was not delivered.
func (c *conn) Probe(timeout time.Duration) bool {
	select {
	case <-c.alive: // an old sign says nothing about now
	default:
	}
	payload := fmt.Sprintf("probe-%d", c.probes.Add(1))
	c.probe.Store(&payload)
	defer c.probe.Store(nil)
	if err := c.ws.WriteControl(websocket.PingMessage, []byte(payload), time.Now().Add(timeout)); err == nil {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-c.alive:
			return true
		case <-c.readerDone:
		case <-t.C:
		}
	}
	c.log.Info().Dur("timeout", timeout).Msg("connection gave no sign of life: closing it")
	c.stopOnce.Do(func() { close(c.stop) })
	_ = c.ws.UnderlyingConn().Close()
	<-c.writerDone // its blocked write fails at once on the closed socket
	return false
}

// Unsent implements actors.Drainer: the events the client did not confirm,
// written or not, in order. The connection takes no more events afterwards.
func (c *conn) Unsent() []actors.Event { return append(c.acks.take(), c.queue.drain()...) }

func (c *conn) extendDeadline() error {
	return c.ws.SetReadDeadline(time.Now().Add(c.srv.cfg.PingInterval + c.srv.cfg.PongWait))
}

// readLoop reads frames for the handler. Oversized frames are discarded
// without being held in memory, so one bad frame does not end the session.
func (c *conn) readLoop() {
	defer close(c.readerDone)
	defer close(c.frames)
	limit := c.srv.cfg.MaxMessageBytes
	for {
		_ = c.extendDeadline()
		kind, r, err := c.ws.NextReader()
		if err != nil {
			return
		}
		data, err := io.ReadAll(io.LimitReader(r, limit+1))
		if err != nil {
			return
		}
		c.signalAlive()
		f := frame{data: data}
		switch {
		case int64(len(data)) > limit:
			if _, err := io.Copy(io.Discard, r); err != nil {
				return
			}
			f = frame{err: badMessage(actors.StatusExecError, "Message too large: the limit is %d bytes.", limit)}
		case kind != websocket.TextMessage:
			f = frame{err: badMessage(actors.StatusExecError, "Invalid message: expected a JSON text frame.")}
		}
		select {
		case c.frames <- f:
		case <-c.stop:
			return
		}
	}
}

// writeLoop is the only writer of the socket: events in order, keepalive
// and confirmation pings, and the close frame an event may ask for.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	ping := time.NewTicker(c.srv.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-c.queue.ready:
			if !c.writeAll(c.queue.take()) {
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				return
			}
		case <-c.acks.wantAck:
			if payload, ok := c.acks.pingFor(); ok {
				if err := c.ws.WriteControl(websocket.PingMessage, []byte(payload), time.Now().Add(writeTimeout)); err != nil {
					return
				}
			}
		case <-c.stop:
			return
		}
	}
}

// writeAll writes events in order; false means the connection is done (a
// write failed or an event closed it). Written events wait for the
// client's confirmation; after a failed write the events not written go
// back to the queue. Both are the sandbox's to replay.
func (c *conn) writeAll(events []actors.Event) bool {
	for i, ev := range events {
		if !c.write(ev) {
			c.acks.written(events[:i])
			c.queue.requeue(events[i:])
			return false
		}
		if ev.CloseCode != 0 {
			c.acks.written(events[:i+1])
			releaseAll(events[i+1:])
			c.closeWith(ev.CloseCode)
			return false
		}
	}
	c.acks.written(events)
	return true
}

func releaseAll(events []actors.Event) {
	for _, ev := range events {
		ev.Release()
	}
}

// wireEvent is an event as JSON (protocol.md §4). Empty keys are omitted;
// the actor never produces empty output chunks.
type wireEvent struct {
	Event        string `json:"event"`
	Status       string `json:"status,omitempty"`
	Message      string `json:"message,omitempty"`
	Data         string `json:"data,omitempty"`
	SandboxID    string `json:"sandbox_id,omitempty"`
	SandboxToken string `json:"sandbox_token,omitempty"`
	Offset       *int64 `json:"offset,omitempty"`
	ExitCode     *int   `json:"exit_code,omitempty"`
	Reason       string `json:"reason,omitempty"`
	Pool         string `json:"pool,omitempty"`
	DroppedBytes int64  `json:"dropped_bytes,omitempty"`
}

func encodeEvent(ev actors.Event) ([]byte, error) {
	w := wireEvent{
		Event: ev.Kind, Status: ev.Status, Message: ev.Message, Data: ev.Data,
		SandboxID: ev.SandboxID, SandboxToken: ev.Token, ExitCode: ev.ExitCode, Reason: ev.Reason, Pool: ev.Pool,
		DroppedBytes: ev.DroppedBytes,
	}
	if ev.Kind == actors.EventStdout || ev.Kind == actors.EventStderr {
		w.Offset = &ev.Offset // 0 too: a replayed first chunk must say so
	}
	return json.Marshal(w)
}

// write sends one event; the caller releases it once it is written.
func (c *conn) write(ev actors.Event) bool {
	if ev.Kind == "" {
		return true // a marker (end of sandbox), nothing to send
	}
	data, err := encodeEvent(ev)
	if err != nil {
		c.log.Error().Err(err).Msg("encode event")
		return true
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := c.ws.WriteMessage(websocket.TextMessage, data); err != nil {
		return false
	}
	return true
}

// closeWith sends the close frame and gives the client a moment to answer
// it before the socket is torn down.
func (c *conn) closeWith(code int) {
	msg := websocket.FormatCloseMessage(code, "")
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeTimeout)); err != nil {
		return
	}
	select {
	case <-c.readerDone:
	case <-time.After(2 * time.Second):
	}
}

// nextFrame waits for the client's next frame; false means it left.
func (c *conn) nextFrame(timeout time.Duration) (frame, bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case f, ok := <-c.frames:
		return f, ok
	case <-t.C:
		return frame{}, false
	}
}

// fail sends an error status (and the error event), closes with code and
// waits for the close to go out.
func (c *conn) fail(status, message string, code int) {
	events := actors.ErrorEvents(status, message)
	events[len(events)-1].CloseCode = code
	for _, ev := range events {
		c.queue.Send(ev)
	}
	select {
	case <-c.writerDone:
	case <-time.After(writeTimeout):
	}
}

// reply sends an error status for a bad client message; the connection
// stays open.
func (c *conn) reply(perr *protocolError) {
	for _, ev := range actors.ErrorEvents(perr.status, perr.message) {
		c.queue.Send(ev)
	}
}

// serve routes the client's frames to the sandbox until either side ends.
func (c *conn) serve() {
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				return
			}
			c.handle(f)
		case <-c.writerDone:
			return
		}
	}
}

func (c *conn) handle(f frame) {
	if f.err != nil {
		c.reply(f.err)
		return
	}
	msg, perr := decodeMessage(f.data)
	if perr != nil {
		c.reply(perr)
		return
	}
	switch m := msg.(type) {
	case actors.Reconnect:
		if !c.gone.Load() { // nothing to resume: no reply
			c.ref.Send(m)
		}
	case actors.Checkpoint:
		if c.gone.Load() {
			c.fail(actors.StatusCheckpointError, "Cannot checkpoint: the sandbox has been deleted.", actors.CloseError)
			return
		}
		c.ref.Send(m)
	case actors.SnapshotFilesystem:
		if c.gone.Load() {
			c.reply(badMessage(actors.StatusSnapshotError, "Cannot take a filesystem snapshot: the sandbox has been deleted."))
			return
		}
		c.ref.Send(m)
	default:
		if c.gone.Load() {
			c.reply(badMessage(actors.StatusExecError, "The sandbox has been deleted."))
			return
		}
		c.ref.Send(msg)
	}
}

// detachWait bounds the wait for a sandbox to take a connection's
// undelivered events.
const detachWait = 5 * time.Second

// shutdown detaches from the sandbox (which lives on until its idle
// timeout, keeping what was not delivered for a reconnect) and releases
// the connection's goroutines.
func (c *conn) shutdown() {
	c.stopOnce.Do(func() { close(c.stop) })
	select {
	case <-c.writerDone:
	case <-time.After(time.Second):
		// Blocked writing to a client that does not read: it is leaving.
		_ = c.ws.UnderlyingConn().Close()
		<-c.writerDone
	}
	if c.ref != nil && !c.gone.Load() { // a gone sandbox's actor has stopped
		done := make(chan struct{})
		c.ref.Send(actors.Detach{Sink: c, Done: done})
		select {
		case <-done:
		case <-time.After(detachWait):
		}
	}
	_ = c.ws.Close()
	<-c.readerDone
	c.queue.close()
	releaseAll(c.acks.take())
}
