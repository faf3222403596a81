package transport

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool"
	"github.com/sandpool/sandpool/pool/checkpoints"
	"github.com/sandpool/sandpool/runsc"
)

func attachPath(id, token string) string { return "/attach/" + id + "?sandbox_token=" + token }

func TestAttachRefusals(t *testing.T) {
	s := newTestServer(t, 4)
	owner := s.dial(t, "/create")
	created := owner.create()
	owner.pump() // alive: it answers the pings that probe it
	id, token := created["sandbox_id"].(string), created["sandbox_token"].(string)

	tests := []struct {
		name    string
		path    string
		status  string
		message string
		code    int
	}{
		{"empty token", attachPath(id, ""), actors.StatusPermissionDenial, "Sandbox token is missing.", actors.CloseError},
		{"unknown id", attachPath(strings.Repeat("a", 32), token), actors.StatusNotFound, "Sandbox not found", actors.CloseNotFound},
		{"wrong token", attachPath(id, strings.Repeat("0", 64)), actors.StatusPermissionDenial, "Invalid sandbox token.", actors.CloseError},
		{"attached elsewhere", attachPath(id, token), actors.StatusInUse, "in use", actors.CloseNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := s.dial(t, tt.path)
			c.expectError(tt.status, tt.message)
			c.expectClose(tt.code)
		})
	}

	// The owner never noticed: it keeps its sandbox and its events.
	out, _ := owner.run("bash", "still mine")
	assert.Equal(t, "still mine", out)

	resp, err := http.Get(s.srv.URL + "/attach/" + id)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "no sandbox_token parameter: no upgrade")
}

func TestAttachAfterTheClientLeft(t *testing.T) {
	s := newTestServer(t, 4)
	owner := s.dial(t, "/create")
	created := owner.create()
	require.NoError(t, owner.ws.Close())

	var c *wsClient
	require.Eventually(t, func() bool {
		c = s.dial(t, attachPath(created["sandbox_id"].(string), created["sandbox_token"].(string)))
		return c.next()["status"] == actors.StatusRunning
	}, 5*time.Second, 20*time.Millisecond)
	out, code := c.run("python", "same sandbox")
	assert.Equal(t, "same sandbox", out)
	assert.Equal(t, float64(0), code)
}

// TestAttachOverADeadSocket: the owner's socket stops answering pings; a
// valid attach replaces it at once instead of hearing SANDBOX_IN_USE.
func TestAttachOverADeadSocket(t *testing.T) {
	s := newTestServer(t, 4)
	owner := s.dial(t, "/create")
	created := owner.create()
	// The owner no longer reads: gorilla answers pings only while reading.
	// The keepalive (10 s + 20 s by default) is far beyond the 5 s
	// the client waits: only the probe can free the sandbox in time.
	c := s.dial(t, attachPath(created["sandbox_id"].(string), created["sandbox_token"].(string)))
	c.expectStatus(actors.StatusRunning)
	out, _ := c.run("bash", "taken over")
	assert.Equal(t, "taken over", out)
}

// TestDeadSocketIsDetectedByPing: a client that answers no ping loses its
// connection within PingInterval+PongWait.
func TestDeadSocketIsDetectedByPing(t *testing.T) {
	s := newTestServer(t, 4, func(c *Config) {
		c.PingInterval, c.PongWait = 50*time.Millisecond, 50*time.Millisecond
	})
	c := s.dial(t, "/create")
	c.create()
	c.ws.SetPingHandler(func(string) error { return nil }) // never pong
	// Our deadline is far beyond PingInterval+PongWait: only the server
	// can end this read.
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ne interface{ Timeout() bool }
		assert.NotErrorAs(t, err, &ne, "the server closed it, not our deadline")
		return
	}
}

func TestReconnectResumesTheOutputExactlyOnce(t *testing.T) {
	s := newTestServer(t, 4)
	steps := make(chan string)
	s.rt.Handler = func(e runsc.FakeExec) int {
		for line := range steps {
			if _, err := io.WriteString(e.Stdout, line); err != nil {
				return 1
			}
		}
		return 0
	}
	owner := s.dial(t, "/create")
	created := owner.create()
	owner.send(map[string]any{"language": "bash", "code": "lines"})
	owner.expectStatus(actors.StatusExecRunning)
	steps <- "1\n"
	assert.Equal(t, "1\n", owner.next()["data"])
	// The connection drops without a close frame.
	require.NoError(t, owner.ws.UnderlyingConn().Close())
	c := s.dial(t, attachPath(created["sandbox_id"].(string), created["sandbox_token"].(string)))
	c.expectStatus(actors.StatusRunning)
	// Produced while nobody listens: kept until the reconnect.
	steps <- "2\n"
	steps <- "3\n"
	c.send(map[string]any{"action": "reconnect"})
	c.expectStatus(actors.StatusExecRunning)
	steps <- "4\n"
	close(steps)
	out := ""
	for {
		ev := c.next()
		if ev["event"] == "stdout" {
			out += ev["data"].(string)
			continue
		}
		require.Equal(t, actors.StatusExecDone, ev["status"])
		break
	}
	assert.Equal(t, "2\n3\n4\n", out)
}

func TestCheckpointAndRestoreOverWebSocket(t *testing.T) {
	store, err := checkpoints.New(checkpoints.Config{Dir: t.TempDir()})
	require.NoError(t, err)
	s := startTestServer(t, pool.Config{Limits: pool.Limits{MaxSandboxes: 4}, Checkpoints: store})
	owner := s.dial(t, "/create")
	owner.send(map[string]any{"idle_timeout": 60, "enable_checkpoint": true})
	owner.expectStatus(actors.StatusCreating)
	created := owner.next()
	owner.expectStatus(actors.StatusRunning)

	owner.send(map[string]any{"action": "checkpoint"})
	for _, st := range []string{actors.StatusCheckpointing, actors.StatusDeleting, actors.StatusDeleted, actors.StatusCheckpointed} {
		owner.expectStatus(st)
	}
	owner.expectClose(actors.CloseNormal)

	c := s.dial(t, attachPath(created["sandbox_id"].(string), created["sandbox_token"].(string)))
	c.expectStatus(actors.StatusRestoring)
	c.expectStatus(actors.StatusRunning)
	out, _ := c.run("bash", "restored")
	assert.Equal(t, "restored", out)

	c.send(map[string]any{"action": "kill_sandbox"})
	c.expectStatus(actors.StatusKilling)
	for {
		if c.next()["status"] == actors.StatusKilled {
			break
		}
	}
	_, err = store.Load(created["sandbox_id"].(string))
	assert.ErrorIs(t, err, checkpoints.ErrNotFound, "kill removes the checkpoint")
}
