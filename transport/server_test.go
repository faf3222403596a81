package transport

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool"
	"github.com/sandpool/sandpool/runsc"
)

type testServer struct {
	rt   *runsc.Fake
	pool *pool.Pool
	srv  *httptest.Server
}

func newTestServer(t *testing.T, maxSandboxes int, tweak ...func(*Config)) *testServer {
	t.Helper()
	return startTestServer(t, pool.Config{Limits: pool.Limits{MaxSandboxes: maxSandboxes}}, tweak...)
}

// startTestServer serves a pool configured by pc on the fake runtime.
func startTestServer(t *testing.T, pc pool.Config, tweak ...func(*Config)) *testServer {
	t.Helper()
	rt := runsc.NewFake()
	pc.System, pc.Runtime, pc.Logger = actor.NewActorSystem(), rt, zerolog.Nop()
	p, err := pool.New(pc)
	require.NoError(t, err)
	cfg := Config{Pool: p, Logger: zerolog.Nop(), DefaultIdleTimeout: time.Minute}
	for _, f := range tweak {
		f(&cfg)
	}
	s, err := New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, p.Shutdown(ctx))
		assert.Empty(t, rt.Live(), "sandboxes left after shutdown")
	})
	return &testServer{rt: rt, pool: p, srv: srv}
}

type wsClient struct {
	t  *testing.T
	ws *websocket.Conn
	// frames, once pump started, gets every frame read in the background
	// (a live client: it answers pings while the test does other things).
	frames chan frameOrErr
}

type frameOrErr struct {
	data []byte
	err  error
}

// pump keeps reading in the background, as a real client does.
func (c *wsClient) pump() {
	c.frames = make(chan frameOrErr, 1000)
	go func() {
		for {
			_, data, err := c.ws.ReadMessage()
			c.frames <- frameOrErr{data, err}
			if err != nil {
				return
			}
		}
	}()
}

// read returns the next frame, from the pump if it runs.
func (c *wsClient) read() ([]byte, error) {
	if c.frames == nil {
		_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := c.ws.ReadMessage()
		return data, err
	}
	select {
	case f := <-c.frames:
		return f.data, f.err
	case <-time.After(5 * time.Second):
		return nil, errors.New("no frame within 5s")
	}
}

func (s *testServer) dial(t *testing.T, path string) *wsClient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(s.srv.URL, "http")+path, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ws.Close() })
	return &wsClient{t: t, ws: ws}
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	require.NoError(c.t, c.ws.WriteJSON(v))
}

func (c *wsClient) sendRaw(kind int, data []byte) {
	c.t.Helper()
	require.NoError(c.t, c.ws.WriteMessage(kind, data))
}

// next returns the next event as a map; a close frame fails the test.
func (c *wsClient) next() map[string]any {
	c.t.Helper()
	data, err := c.read()
	require.NoError(c.t, err)
	var ev map[string]any
	require.NoError(c.t, json.Unmarshal(data, &ev))
	return ev
}

func (c *wsClient) expectStatus(status string) map[string]any {
	c.t.Helper()
	ev := c.next()
	require.Equal(c.t, status, ev["status"], "event %v", ev)
	return ev
}

// expectError checks an error status, its message and the error event.
func (c *wsClient) expectError(status, message string) {
	c.t.Helper()
	ev := c.expectStatus(status)
	assert.Contains(c.t, ev["message"], message)
	errEv := c.next()
	assert.Equal(c.t, "error", errEv["event"])
	assert.Equal(c.t, ev["message"], errEv["message"])
}

func (c *wsClient) expectClose(code int) {
	c.t.Helper()
	_, err := c.read()
	var ce *websocket.CloseError
	require.ErrorAs(c.t, err, &ce)
	assert.Equal(c.t, code, ce.Code)
}

func (c *wsClient) create() map[string]any {
	c.t.Helper()
	c.send(map[string]any{"idle_timeout": 60, "enable_checkpoint": false, "enable_sandbox_handoff": false, "enable_idle_timeout_auto_checkpoint": false})
	c.expectStatus(actors.StatusCreating)
	id := c.next()
	require.Equal(c.t, "sandbox_id", id["event"])
	c.expectStatus(actors.StatusRunning)
	return id
}

// run executes code with the fake runtime (which echoes the code) and
// returns stdout and the exit code.
func (c *wsClient) run(language, code string) (string, float64) {
	c.t.Helper()
	c.send(map[string]any{"language": language, "code": code})
	c.expectStatus(actors.StatusExecRunning)
	out := ""
	for {
		ev := c.next()
		switch ev["event"] {
		case "stdout":
			out += ev["data"].(string)
		case "status_update":
			require.Equal(c.t, actors.StatusExecDone, ev["status"], "event %v", ev)
			return out, ev["exit_code"].(float64)
		}
	}
}

func TestCreateAndExecute(t *testing.T) {
	s := newTestServer(t, 4)
	c := s.dial(t, "/create")
	id := c.create()
	assert.Regexp(t, `^[0-9a-f]{32}$`, id["sandbox_id"])
	assert.Regexp(t, `^[0-9a-f]{64}$`, id["sandbox_token"])

	out, code := c.run("python", "hello")
	assert.Equal(t, "hello", out)
	assert.Equal(t, float64(0), code)
	_, code = c.run("bash", "exit 3")
	assert.Equal(t, float64(3), code)

	c.send(map[string]any{"action": "kill_sandbox"})
	for _, st := range []string{actors.StatusKilling, actors.StatusDeleting, actors.StatusDeleted, actors.StatusKilled} {
		c.expectStatus(st)
	}
	c.expectClose(actors.CloseNormal)
	assert.Empty(t, s.rt.Live())
}

func TestCreationErrors(t *testing.T) {
	tests := []struct {
		name    string
		init    []byte
		message string
	}{
		{"not JSON", []byte("hello"), "not valid JSON"},
		{"not an object", []byte("[1,2]"), "expected a JSON object"},
		{"null", []byte("null"), "expected a JSON object"},
		{"bad idle_timeout", []byte(`{"idle_timeout":"soon"}`), "idle_timeout"},
		{"negative idle_timeout", []byte(`{"idle_timeout":-1}`), "idle_timeout"},
		{"bad flag type", []byte(`{"enable_checkpoint":"yes"}`), "enable_checkpoint"},
		{"handoff without checkpoint", []byte(`{"enable_sandbox_handoff":true}`), "'enable_sandbox_handoff' requires 'enable_checkpoint'"},
		{"auto-checkpoint without checkpoint", []byte(`{"enable_idle_timeout_auto_checkpoint":true,"enable_checkpoint":false}`), "'enable_idle_timeout_auto_checkpoint' requires 'enable_checkpoint'"},
		{"checkpoint disabled", []byte(`{"enable_checkpoint":true}`), "Checkpointing is not enabled on the server."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, 4)
			c := s.dial(t, "/create")
			c.sendRaw(websocket.TextMessage, tt.init)
			if strings.HasPrefix(tt.message, "Checkpointing") {
				c.expectStatus(actors.StatusCreating) // the pool refuses it
			}
			c.expectError(actors.StatusCreationError, tt.message)
			c.expectClose(actors.CloseError)
			assert.Empty(t, s.rt.Calls(), "nothing may be created for a bad init")
		})
	}
}

func TestCapacity(t *testing.T) {
	s := newTestServer(t, 1)
	first := s.dial(t, "/create")
	first.create()
	second := s.dial(t, "/create")
	second.send(map[string]any{})
	second.expectStatus(actors.StatusCreating)
	second.expectError(actors.StatusCreationError, "Sandbox capacity reached: the server runs its maximum of 1 sandboxes; try again later")
	second.expectClose(actors.CloseError)
}

func TestBadMessagesKeepTheConnection(t *testing.T) {
	tests := []struct {
		name    string
		kind    int
		frame   string
		status  string
		message string
	}{
		{"not JSON", websocket.TextMessage, "print(1)", actors.StatusExecError, "not valid JSON"},
		{"not an object", websocket.TextMessage, `"hello"`, actors.StatusExecError, "expected a JSON object"},
		{"binary frame", websocket.BinaryMessage, `{"language":"python","code":"x"}`, actors.StatusExecError, "text frame"},
		{"code not a string", websocket.TextMessage, `{"language":"python","code":5}`, actors.StatusExecError, "'code' must be a string"},
		{"language null", websocket.TextMessage, `{"language":null,"code":"x"}`, actors.StatusUnsupportedLang, "Unsupported language: 'null'"},
		{"unknown action", websocket.TextMessage, `{"action":"dance"}`, actors.StatusExecError, "Unknown action: 'dance'"},
		{"action not a string", websocket.TextMessage, `{"action":7}`, actors.StatusExecError, "'action' must be a string"},
		{"stdin without data", websocket.TextMessage, `{"event":"stdin"}`, actors.StatusStdinError, "'data' must be a string"},
		{"stdin with nothing running", websocket.TextMessage, `{"event":"stdin","data":"x"}`, actors.StatusExecError, "No execution"},
		{"bad timeout", websocket.TextMessage, `{"language":"python","code":"x","timeout":-1}`, actors.StatusExecError, "'timeout'"},
		{"relative cwd", websocket.TextMessage, `{"language":"python","code":"x","cwd":"tmp"}`, actors.StatusExecError, "'cwd'"},
		{"snapshot disabled", websocket.TextMessage, `{"action":"snapshot_filesystem","name":"x"}`, "SANDBOX_FILESYSTEM_SNAPSHOT_ERROR", "not enabled"},
	}
	s := newTestServer(t, 4)
	c := s.dial(t, "/create")
	c.create()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.sendRaw(tt.kind, []byte(tt.frame))
			c.expectError(tt.status, tt.message)
			if tt.status == actors.StatusUnsupportedLang {
				c.expectStatus(actors.StatusExecDone)
			}
			out, _ := c.run("python", "still works")
			assert.Equal(t, "still works", out)
		})
	}
}

func TestCheckpointWithoutCheckpointingEndsTheSession(t *testing.T) {
	s := newTestServer(t, 4)
	c := s.dial(t, "/create")
	c.create()
	c.send(map[string]any{"action": "checkpoint"})
	c.expectError("SANDBOX_CHECKPOINT_ERROR", "Checkpointing is not enabled on the server.")
	c.expectClose(actors.CloseError)
}

func TestOversizedFrameIsDiscardedNotFatal(t *testing.T) {
	s := newTestServer(t, 4, func(c *Config) { c.MaxMessageBytes = 1 << 20 })
	c := s.dial(t, "/create")
	c.create()
	big := `{"language":"python","code":"` + strings.Repeat("x", 3<<20) + `"}`
	c.sendRaw(websocket.TextMessage, []byte(big))
	c.expectError(actors.StatusExecError, "Message too large")
	out, _ := c.run("python", "after")
	assert.Equal(t, "after", out)
}

func TestReconnectWithNothingLiveSendsNothing(t *testing.T) {
	s := newTestServer(t, 4)
	c := s.dial(t, "/create")
	c.create()
	c.send(map[string]any{"action": "reconnect"})
	out, _ := c.run("bash", "next") // the first event after reconnect is the run's
	assert.Equal(t, "next", out)
}

func TestIdleExpiryKeepsSocketOpen(t *testing.T) {
	s := newTestServer(t, 4)
	c := s.dial(t, "/create")
	c.send(map[string]any{"idle_timeout": 0.2})
	c.expectStatus(actors.StatusCreating)
	c.next()
	c.expectStatus(actors.StatusRunning)
	c.expectStatus(actors.StatusDeleting)
	c.expectStatus(actors.StatusDeleted)
	require.Eventually(t, func() bool { return len(s.rt.Live()) == 0 }, 2*time.Second, 10*time.Millisecond)
	c.send(map[string]any{"language": "python", "code": "x"})
	c.expectError(actors.StatusExecError, "deleted")
}

func TestServerPings(t *testing.T) {
	s := newTestServer(t, 4, func(c *Config) { c.PingInterval = 50 * time.Millisecond })
	c := s.dial(t, "/create")
	var pings atomic.Int32
	c.ws.SetPingHandler(func(string) error {
		pings.Add(1)
		return c.ws.WriteControl(websocket.PongMessage, nil, time.Now().Add(time.Second))
	})
	c.create()
	go func() { // control frames are handled while reading
		for {
			if _, _, err := c.ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	require.Eventually(t, func() bool { return pings.Load() >= 2 }, 2*time.Second, 10*time.Millisecond)
}

func TestDroppedBeforeInitCreatesNothing(t *testing.T) {
	s := newTestServer(t, 4)
	for i := 0; i < 20; i++ {
		c := s.dial(t, "/create")
		_ = c.ws.UnderlyingConn().Close()
	}
	c := s.dial(t, "/create")
	c.create()
	assert.Len(t, s.rt.Live(), 1)
}

func TestDisconnectDuringCreateKillsTheSandbox(t *testing.T) {
	s := newTestServer(t, 4)
	s.rt.CreateDelay = 300 * time.Millisecond
	c := s.dial(t, "/create")
	c.send(map[string]any{})
	c.expectStatus(actors.StatusCreating)
	_ = c.ws.UnderlyingConn().Close()
	// Nobody can ever learn this sandbox's token: it must not live on
	// (its create is cancelled, or it is deleted if the create won).
	require.Eventually(t, func() bool { return s.pool.Live() == 0 }, 3*time.Second, 10*time.Millisecond)
	assert.Empty(t, s.rt.Live())
}

func TestAttachRequiresToken(t *testing.T) {
	s := newTestServer(t, 4)
	resp, err := http.Get(s.srv.URL + "/attach/abc")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)

	c := s.dial(t, "/attach/abc?sandbox_token=")
	c.expectError(actors.StatusPermissionDenial, "Sandbox token is missing.")
	c.expectClose(actors.CloseError)

	c = s.dial(t, "/attach/abc?sandbox_token=xyz")
	c.expectError(actors.StatusNotFound, "not found")
	c.expectClose(actors.CloseNotFound)
}

func TestHTTPEndpoints(t *testing.T) {
	s := newTestServer(t, 4)
	get := func(path string) (int, string) {
		resp, err := http.Get(s.srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	code, body := get("/status")
	assert.Equal(t, 200, code)
	assert.JSONEq(t, `{"status":"ok"}`, body)
	code, body = get("/")
	assert.Equal(t, 200, code)
	assert.JSONEq(t, `{"message":"Server is running"}`, body)
	code, _ = get("/healthz")
	assert.Equal(t, 200, code)

	post := func(query, code string) (int, string) {
		resp, err := http.Post(s.srv.URL+"/execute"+query, "text/plain", strings.NewReader(code))
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	status, out := post("?language=bash", "echo hi")
	assert.Equal(t, 200, status)
	assert.Equal(t, "echo hi", out)
	status, out = post("", "print(1)")
	assert.Equal(t, 200, status, "python is the default")
	assert.Equal(t, "print(1)", out)
	status, _ = post("?language=ruby", "puts 1")
	assert.Equal(t, http.StatusUnprocessableEntity, status)
	status, _ = post("?language=python", strings.Repeat("x", 2<<20))
	assert.Equal(t, http.StatusRequestEntityTooLarge, status)
	require.Eventually(t, func() bool { return len(s.rt.Live()) == 0 }, 2*time.Second, 10*time.Millisecond,
		"every /execute sandbox is deleted")
}
