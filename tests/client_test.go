package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

const (
	// eventTimeout bounds the wait for one expected event. Generous because
	// the machine has 2 shared cores and a cold gVisor start is ~160 ms
	// unloaded but much more under the concurrent tests.
	eventTimeout = 30 * time.Second
	// execTimeout bounds a whole execution from request to DONE.
	execTimeout = 60 * time.Second
	// writeTimeout bounds one client frame write (20 MiB ones included).
	writeTimeout = 60 * time.Second
)

// Status strings used by the tests (protocol.md §5).
const (
	statusCreating        = "SANDBOX_CREATING"
	statusRunning         = "SANDBOX_RUNNING"
	statusCreationError   = "SANDBOX_CREATION_ERROR"
	statusDeleting        = "SANDBOX_DELETING"
	statusDeleted         = "SANDBOX_DELETED"
	statusKilling         = "SANDBOX_KILLING"
	statusKilled          = "SANDBOX_KILLED"
	statusExecRunning     = "SANDBOX_EXECUTION_RUNNING"
	statusExecDone        = "SANDBOX_EXECUTION_DONE"
	statusExecError       = "SANDBOX_EXECUTION_ERROR"
	statusUnsupportedLang = "SANDBOX_EXECUTION_UNSUPPORTED_LANGUAGE_ERROR"
	statusForceKilled     = "SANDBOX_EXECUTION_FORCE_KILLED"
	statusStdinError      = "SANDBOX_STDIN_ERROR"
	statusRestoring       = "SANDBOX_RESTORING"
	statusRestoreError    = "SANDBOX_RESTORE_ERROR"
	statusCheckpointing   = "SANDBOX_CHECKPOINTING"
	statusCheckpointed    = "SANDBOX_CHECKPOINTED"
	statusCheckpointError = "SANDBOX_CHECKPOINT_ERROR"
	statusExecInProgress  = "SANDBOX_EXECUTION_IN_PROGRESS_ERROR"
	statusPermission      = "SANDBOX_PERMISSION_DENIAL_ERROR"
	statusNotFound        = "SANDBOX_NOT_FOUND"
	statusInUse           = "SANDBOX_IN_USE"
	statusLockRelease     = "SANDBOX_LOCK_RELEASE_REQUESTED"
)

// Close codes (protocol.md §7).
const (
	closeNormal   = websocket.CloseNormalClosure     // 1000
	closeNotFound = websocket.CloseInternalServerErr // 1011
	closeError    = 4000
)

// event is one server -> client message. raw keeps the frame for messages.
type event struct {
	Event        string `json:"event"`
	Status       string `json:"status"`
	Message      string `json:"message"`
	SandboxID    string `json:"sandbox_id"`
	SandboxToken string `json:"sandbox_token"`
	Data         string `json:"data"`
	ExitCode     *int   `json:"exit_code"`
	Reason       string `json:"reason"`
	// Pool is "hit" or "miss" on the RUNNING of a create.
	Pool string `json:"pool"`
	// DroppedBytes is on the RUNNING that resumes a detached execution.
	DroppedBytes int64 `json:"dropped_bytes"`
	// Offset is on every output chunk: where its data starts in its stream.
	Offset *int64 `json:"offset"`

	raw []byte
}

func (e event) String() string { return string(e.raw) }

func (e event) isStatus(status string) bool {
	return e.Event == "status_update" && e.Status == status
}

// isErrorStatus reports whether a status is one of the protocol's error
// statuses (they all read SANDBOX_..._ERROR).
func isErrorStatus(status string) bool {
	return strings.HasPrefix(status, "SANDBOX_") && strings.HasSuffix(status, "_ERROR")
}

// sandboxInit builds the init message the TypeScript client sends: it always
// carries these four keys.
func sandboxInit(idleTimeout int) map[string]any {
	return map[string]any{
		"idle_timeout":                        idleTimeout,
		"enable_checkpoint":                   false,
		"enable_sandbox_handoff":              false,
		"enable_idle_timeout_auto_checkpoint": false,
	}
}

// client is one WebSocket connection to the server. Methods ending in E
// return errors instead of failing the test, so they can run in goroutines
// and inside Eventually conditions; the others fail the test at once.
type client struct {
	conn *websocket.Conn
}

func dial(url string) (*client, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	return &client{conn: conn}, nil
}

// mustDial opens a connection that is closed when the test ends.
func mustDial(t testing.TB, s *server, path string) *client {
	t.Helper()
	c, err := dial(s.wsURL(path))
	require.NoError(t, err)
	t.Cleanup(c.close)
	return c
}

func (c *client) close() { _ = c.conn.Close() }

// drop closes the TCP connection without a close frame, like a client
// process that died or lost its network.
func (c *client) drop() { _ = c.conn.UnderlyingConn().Close() }

func (c *client) sendJSONE(v any) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.conn.WriteJSON(v)
}

func (c *client) sendJSON(t testing.TB, v any) {
	t.Helper()
	require.NoError(t, c.sendJSONE(v), "send %v", v)
}

// sendText writes a raw text frame (used for frames that are not valid
// messages).
func (c *client) sendText(t testing.TB, data []byte) {
	t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	require.NoError(t, c.conn.WriteMessage(websocket.TextMessage, data), "send text frame of %d bytes", len(data))
}

// readE reads the next message and checks the framing rules every server
// message must follow: a text frame holding a JSON object with "event",
// output events carrying a string "data", error statuses carrying a message.
func (c *client) readE(timeout time.Duration) (event, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	typ, data, err := c.conn.ReadMessage()
	if err != nil {
		return event{}, err
	}
	if typ != websocket.TextMessage {
		return event{}, fmt.Errorf("server sent a non-text frame (type %d): %q", typ, data)
	}
	ev := event{raw: data}
	if err := json.Unmarshal(data, &ev); err != nil {
		return event{}, fmt.Errorf("server sent a frame that is not a JSON object: %q: %w", data, err)
	}
	if ev.Event == "" {
		return event{}, fmt.Errorf("server message without \"event\": %s", data)
	}
	if ev.Event == "stdout" || ev.Event == "stderr" {
		// The TS client crashes on a null or missing data.
		var probe struct {
			Data *string `json:"data"`
		}
		if json.Unmarshal(data, &probe) != nil || probe.Data == nil {
			return event{}, fmt.Errorf("output event without string data: %s", data)
		}
		if ev.Offset == nil {
			return event{}, fmt.Errorf("output event without offset: %s", data)
		}
	}
	if ev.Event == "status_update" && isErrorStatus(ev.Status) && ev.Message == "" {
		return event{}, fmt.Errorf("error status without message: %s", data)
	}
	if ev.Event == "error" && ev.Message == "" {
		return event{}, fmt.Errorf("error event without message: %s", data)
	}
	return ev, nil
}

// next reads the next event or fails the test.
func (c *client) next(t testing.TB, timeout time.Duration) event {
	t.Helper()
	ev, err := c.readE(timeout)
	require.NoError(t, err, "waiting %s for the next event", timeout)
	return ev
}

// expectStatus requires that the very next event is the given status.
func (c *client) expectStatus(t testing.TB, status string) event {
	t.Helper()
	ev := c.next(t, eventTimeout)
	require.True(t, ev.isStatus(status), "want status %s, got %s", status, ev)
	return ev
}

// expectStatuses requires exactly this sequence of status updates, all
// within timeout.
func (c *client) expectStatuses(t testing.TB, timeout time.Duration, statuses ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for i, want := range statuses {
		ev := c.next(t, time.Until(deadline))
		require.True(t, ev.isStatus(want), "status %d of %v: want %s, got %s", i, statuses, want, ev)
	}
}

// expectError requires an error status (exactly want, or any SANDBOX_*_ERROR
// when want is "") immediately followed by the "error" event, and returns
// the status event.
func (c *client) expectError(t testing.TB, want string) event {
	t.Helper()
	ev := c.next(t, eventTimeout)
	require.Equal(t, "status_update", ev.Event, "want an error status, got %s", ev)
	if want != "" {
		require.Equal(t, want, ev.Status, "got %s", ev)
	} else {
		require.True(t, isErrorStatus(ev.Status), "want a SANDBOX_*_ERROR status, got %s", ev)
	}
	require.NotEmpty(t, ev.Message, "error status without message: %s", ev)

	follow := c.next(t, eventTimeout)
	require.Equal(t, "error", follow.Event, "an error status must be followed by the error event, got %s", follow)
	require.NotEmpty(t, follow.Message)
	return ev
}

// expectClose requires that the server closes the connection next, with the
// given close code.
func (c *client) expectClose(t testing.TB, code int) {
	t.Helper()
	ev, err := c.readE(eventTimeout)
	require.Error(t, err, "want close %d, got event %s", code, ev)
	var ce *websocket.CloseError
	require.True(t, errors.As(err, &ce), "want close %d, got %v", code, err)
	require.Equal(t, code, ce.Code, "close code (reason %q)", ce.Text)
}

// created is what a successful /create handed out.
type created struct {
	ID    string
	Token string
	// Warm: RUNNING said "pool":"hit".
	Warm bool
}

// createE sends init on a fresh /create connection and checks the exact
// create sequence: CREATING, sandbox_id, RUNNING.
func (c *client) createE(init any) (created, error) {
	if err := c.sendJSONE(init); err != nil {
		return created{}, fmt.Errorf("send init: %w", err)
	}
	var got created
	steps := []func(event) error{
		func(ev event) error { return wantStatus(ev, statusCreating) },
		func(ev event) error {
			if ev.Event != "sandbox_id" || ev.SandboxID == "" || ev.SandboxToken == "" {
				return fmt.Errorf("want sandbox_id with id and token, got %s", ev)
			}
			got = created{ID: ev.SandboxID, Token: ev.SandboxToken}
			return nil
		},
		func(ev event) error {
			if ev.Pool != "hit" && ev.Pool != "miss" {
				return fmt.Errorf(`want "pool":"hit" or "miss" on RUNNING, got %s`, ev)
			}
			got.Warm = ev.Pool == "hit"
			return wantStatus(ev, statusRunning)
		},
	}
	for _, step := range steps {
		ev, err := c.readE(eventTimeout)
		if err != nil {
			return created{}, fmt.Errorf("create sequence: %w", err)
		}
		if err := step(ev); err != nil {
			return created{}, err
		}
	}
	return got, nil
}

func wantStatus(ev event, status string) error {
	if !ev.isStatus(status) {
		return fmt.Errorf("want status %s, got %s", status, ev)
	}
	return nil
}

// createSandbox opens /create, creates a sandbox and returns the connection
// that drives it.
func createSandbox(t testing.TB, s *server, init any) (*client, created) {
	t.Helper()
	c := mustDial(t, s, "/create")
	sb, err := c.createE(init)
	require.NoError(t, err)
	return c, sb
}

// result is one finished execution.
type result struct {
	Stdout       string
	Stderr       string
	StdoutChunks []string // each stdout message's data, in arrival order
	Output       []event  // stdout and stderr events in arrival order
	Done         event
	ExitCode     int
}

func execRequest(language, code string) map[string]any {
	return map[string]any{"language": language, "code": code}
}

// runE executes code and collects its output until DONE.
func (c *client) runE(language, code string) (result, error) {
	if err := c.sendJSONE(execRequest(language, code)); err != nil {
		return result{}, fmt.Errorf("send execute: %w", err)
	}
	ev, err := c.readE(eventTimeout)
	if err != nil {
		return result{}, fmt.Errorf("waiting for %s: %w", statusExecRunning, err)
	}
	if !ev.isStatus(statusExecRunning) {
		return result{}, fmt.Errorf("want %s first, got %s", statusExecRunning, ev)
	}
	return c.collectE(time.Now().Add(execTimeout))
}

// collectE reads the output of the running execution until DONE. Anything
// else (an error, a lifecycle status) fails it: a plain execution produces
// only output and DONE.
func (c *client) collectE(deadline time.Time) (result, error) {
	var res result
	var stdout, stderr strings.Builder
	for {
		ev, err := c.readE(time.Until(deadline))
		if err != nil {
			return res, fmt.Errorf("collecting output (stdout so far %q): %w", truncate(stdout.String(), 200), err)
		}
		switch {
		case ev.Event == "stdout":
			stdout.WriteString(ev.Data)
			res.StdoutChunks = append(res.StdoutChunks, ev.Data)
			res.Output = append(res.Output, ev)
		case ev.Event == "stderr":
			stderr.WriteString(ev.Data)
			res.Output = append(res.Output, ev)
		case ev.isStatus(statusExecDone):
			if ev.ExitCode == nil {
				return res, fmt.Errorf("%s without exit_code: %s", statusExecDone, ev)
			}
			res.Stdout, res.Stderr = stdout.String(), stderr.String()
			res.Done, res.ExitCode = ev, *ev.ExitCode
			return res, nil
		default:
			return res, fmt.Errorf("unexpected event during execution: %s", ev)
		}
	}
}

// run executes code and returns its result, failing the test on any
// protocol deviation.
func (c *client) run(t testing.TB, language, code string) result {
	t.Helper()
	res, err := c.runE(language, code)
	require.NoError(t, err, "%s: %s", language, truncate(code, 200))
	return res
}

// resumeStdout appends the stdout chunks of res to have, the stdout a
// client already received, skipping by offset what a replay repeats, as a
// reconnecting client does.
func resumeStdout(have string, res result) string {
	for _, ev := range res.Output {
		if ev.Event != "stdout" {
			continue
		}
		if end := int(*ev.Offset) + len(ev.Data); end > len(have) {
			have += ev.Data[len(have)-int(*ev.Offset):]
		}
	}
	return have
}

// collect reads the running execution's output until DONE.
func (c *client) collect(t testing.TB) result {
	t.Helper()
	res, err := c.collectE(time.Now().Add(execTimeout))
	require.NoError(t, err)
	return res
}

// killSandbox sends kill_sandbox and checks the full kill sequence and the
// normal close.
func (c *client) killSandbox(t testing.TB) {
	t.Helper()
	c.sendJSON(t, map[string]any{"action": "kill_sandbox"})
	c.expectStatuses(t, eventTimeout, statusKilling, statusDeleting, statusDeleted, statusKilled)
	c.expectClose(t, closeNormal)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("...(%d bytes)", len(s))
}
