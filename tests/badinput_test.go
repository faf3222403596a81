package tests

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runAfterError checks that a connection still works after an error: a
// python execute prints correctly. The execute path answers some bad frames
// (missing language) with an unsupported-language error followed by DONE;
// that one DONE is skipped.
func (c *client) runAfterError(t *testing.T) {
	t.Helper()
	c.sendJSON(t, execRequest("python", "print('still alive')"))
	ev := c.next(t, eventTimeout)
	if ev.isStatus(statusExecDone) {
		ev = c.next(t, eventTimeout)
	}
	require.True(t, ev.isStatus(statusExecRunning), "want %s, got %s", statusExecRunning, ev)
	res := c.collect(t)
	assert.Equal(t, "still alive\n", res.Stdout)
	assert.Equal(t, 0, res.ExitCode)
}

func TestBadFrames(t *testing.T) {
	s := startServer(t)

	tests := []struct {
		name       string
		frame      string
		wantStatus string // "" accepts any SANDBOX_*_ERROR
	}{
		{name: "not JSON", frame: "this is not json"},
		{name: "truncated JSON", frame: `{"language":"python","code":`},
		{name: "empty frame", frame: ""},
		{name: "JSON array", frame: `[1,2,3]`},
		{name: "JSON string", frame: `"print(1)"`},
		{name: "JSON number", frame: `42`},
		{name: "JSON null", frame: `null`},
		{name: "code is a number", frame: `{"language":"python","code":5}`},
		{name: "language is null", frame: `{"language":null,"code":"print(1)"}`},
		{name: "missing code", frame: `{"language":"python"}`, wantStatus: statusExecError},
		{name: "unknown action", frame: `{"action":"dance"}`},
		{name: "stdin before any execution", frame: `{"event":"stdin","data":"hello\n"}`, wantStatus: statusExecError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A fresh sandbox per case so one case's damage cannot hide in
			// the next.
			c, _ := createSandbox(t, s, sandboxInit(60))
			c.sendText(t, []byte(tc.frame))
			c.expectError(t, tc.wantStatus)
			c.runAfterError(t)
		})
	}
}

func TestOversizedFrame(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))

	// A syntactically valid execute of 20 MiB: only a frame size limit can
	// reject it, and the connection must survive the rejection.
	frame := `{"language":"python","code":"#` + strings.Repeat("x", 20<<20) + `"}`
	c.sendText(t, []byte(frame))
	c.expectError(t, "")
	c.runAfterError(t)
}

func TestCreationErrors(t *testing.T) {
	s := startServer(t)

	tests := []struct {
		name  string
		frame string
	}{
		{"not JSON", "hello"},
		{"JSON array", `[{"idle_timeout":60}]`},
		{"JSON null", `null`},
		{"JSON string", `"create"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustDial(t, s, "/create")
			c.sendText(t, []byte(tc.frame))
			c.expectCreationError(t)
		})
	}
	assertNoContainers(t, s, 10*time.Second)
}

// expectCreationError requires SANDBOX_CREATION_ERROR (possibly after
// SANDBOX_CREATING, never after a sandbox_id), the error event and close
// 4000.
func (c *client) expectCreationError(t *testing.T) {
	t.Helper()
	ev := c.next(t, eventTimeout)
	if ev.isStatus(statusCreating) {
		ev = c.next(t, eventTimeout)
	}
	require.True(t, ev.isStatus(statusCreationError), "want %s, got %s", statusCreationError, ev)
	require.NotEmpty(t, ev.Message)
	follow := c.next(t, eventTimeout)
	require.Equal(t, "error", follow.Event, "want the error event, got %s", follow)
	c.expectClose(t, closeError)
}

func TestMaxSandboxes(t *testing.T) {
	s := startServer(t, "--max-sandboxes", "2")

	first, _ := createSandbox(t, s, sandboxInit(60))
	createSandbox(t, s, sandboxInit(60))

	over := mustDial(t, s, "/create")
	over.sendJSON(t, sandboxInit(60))
	over.expectCreationError(t)

	ids, err := s.runscList()
	require.NoError(t, err)
	assert.Len(t, ids, 2, "the refused create left nothing behind")

	// Freeing a slot makes room again.
	first.killSandbox(t)
	c, _ := createSandbox(t, s, sandboxInit(60))
	assert.Equal(t, "hello\n", c.run(t, "python", "print('hello')").Stdout)
}

func TestDroppedConnections(t *testing.T) {
	const n = 50
	s := startServer(t)

	// Open all connections at once, then drop them without a single
	// message: half vanish at the TCP level, half close politely.
	conns := make([]*client, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			conns[i], errs[i] = dial(s.wsURL("/create"))
		}(i)
	}
	waitGroupWithin(t, &wg, 60*time.Second)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	})
	for i, c := range conns {
		require.NoError(t, errs[i], "connection %d", i)
		if i%2 == 0 {
			c.drop()
		} else {
			c.close()
		}
	}

	// The server still serves, over HTTP and WebSocket.
	resp, err := http.Get(s.httpURL("/status"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	c, _ := createSandbox(t, s, sandboxInit(60))
	assert.Equal(t, "hello\n", c.run(t, "python", "print('hello')").Stdout)

	// Only the live sandbox has a container; the dropped connections left
	// nothing behind.
	assert.EventuallyWithT(t, func(ct *assert.CollectT) {
		ids, err := s.runscList()
		assert.NoError(ct, err)
		assert.Len(ct, ids, 1)
	}, 10*time.Second, 100*time.Millisecond)

	c.killSandbox(t)
	assertNoContainers(t, s, 10*time.Second)
}
