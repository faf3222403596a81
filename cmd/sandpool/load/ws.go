package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// StatusError is a cycle refused or ended by the server with a status.
type StatusError struct {
	Step    string // create, execute or kill
	Status  string
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Step, e.Status, e.Message)
}

// StepError is a cycle that failed at a step without a status from the
// server: Kind is dial, closed or timeout.
type StepError struct {
	Step string
	Kind string
	Err  error
}

func (e *StepError) Error() string { return fmt.Sprintf("%s: %s: %v", e.Step, e.Kind, e.Err) }
func (e *StepError) Unwrap() error { return e.Err }

// Cause is the key a failed cycle is counted under: the server's status,
// "<kind> (<step>)" for a StepError, else the error's text.
func Cause(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	var st *StepError
	if errors.As(err, &st) {
		return st.Kind + " (" + st.Step + ")"
	}
	return err.Error()
}

// wsCycler runs cycles against a sandpool server over WebSocket, with the
// protocol of the upstream clients.
type wsCycler struct {
	base   *url.URL
	cfg    Config
	dialer websocket.Dialer
}

func newWSCycler(base *url.URL, cfg Config) *wsCycler {
	return &wsCycler{base: base, cfg: cfg, dialer: websocket.Dialer{HandshakeTimeout: cfg.StepTimeout}}
}

func (w *wsCycler) mode() string   { return "sandpool" }
func (w *wsCycler) target() string { return w.base.String() }
func (w *wsCycler) close() error   { return nil }

// message is the part of a server message the cycle reads.
type message struct {
	Event   string `json:"event"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func (w *wsCycler) cycle(ctx context.Context) (sample, error) {
	var s sample
	begin := time.Now()
	u := *w.base
	u.Path = strings.TrimSuffix(u.Path, "/") + "/create"
	conn, _, err := w.dialer.DialContext(ctx, u.String(), nil)
	if err != nil {
		return s, &StepError{Step: "create", Kind: "dial", Err: err}
	}
	defer conn.Close()
	c := &wsConn{conn: conn, timeout: w.cfg.StepTimeout}

	init := map[string]any{"idle_timeout": 60}
	if w.cfg.Snapshot != "" {
		init["filesystem_snapshot_name"] = w.cfg.Snapshot
	}
	if err := c.send("create", init); err != nil {
		return s, err
	}
	if _, err := c.until("create", func(m message) bool { return m.Status == "SANDBOX_RUNNING" }); err != nil {
		return s, err
	}
	s.create = time.Since(begin)

	// From here the sandbox exists: whatever happens, ask for its deletion.
	killed := false
	defer func() {
		if !killed {
			_ = c.send("kill", map[string]string{"action": "kill_sandbox"})
		}
	}()
	execStart := time.Now()
	if err := c.send("execute", map[string]string{"language": w.cfg.Language, "code": w.cfg.Code}); err != nil {
		return s, err
	}
	if _, err := c.until("execute", func(m message) bool {
		if (m.Event == "stdout" || m.Event == "stderr") && s.firstOutput == 0 {
			s.firstOutput = time.Since(execStart)
		}
		return m.Status == "SANDBOX_EXECUTION_DONE"
	}); err != nil {
		return s, err
	}
	s.done = time.Since(execStart)

	if err := c.send("kill", map[string]string{"action": "kill_sandbox"}); err != nil {
		return s, err
	}
	killed = true
	if _, err := c.until("kill", func(m message) bool { return m.Status == "SANDBOX_KILLED" }); err != nil {
		return s, err
	}
	s.total = time.Since(begin)
	return s, nil
}

// wsConn reads and writes one cycle's messages with a deadline per step.
type wsConn struct {
	conn    *websocket.Conn
	timeout time.Duration
}

func (c *wsConn) send(step string, v any) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	if err := c.conn.WriteJSON(v); err != nil {
		return c.stepError(step, err)
	}
	return nil
}

// until reads messages until done(m) holds; an error status fails the step.
func (c *wsConn) until(step string, done func(message) bool) (message, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(c.timeout))
	for {
		_, raw, err := c.conn.ReadMessage()
		if err != nil {
			return message{}, c.stepError(step, err)
		}
		var m message
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		if done(m) {
			return m, nil
		}
		if m.Event == "status_update" && isErrorStatus(step, m.Status) {
			return m, &StatusError{Step: step, Status: m.Status, Message: m.Message}
		}
	}
}

// isErrorStatus: a status ending in _ERROR, NOT_FOUND or IN_USE, and
// DELETED anywhere but in the kill step (where it is on the way to KILLED).
func isErrorStatus(step, status string) bool {
	switch status {
	case "SANDBOX_NOT_FOUND", "SANDBOX_IN_USE":
		return true
	case "SANDBOX_DELETED":
		return step != "kill"
	}
	return strings.HasSuffix(status, "_ERROR")
}

func (c *wsConn) stepError(step string, err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &StepError{Step: step, Kind: "timeout", Err: err}
	}
	return &StepError{Step: step, Kind: "closed", Err: err}
}
