package tests

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// attachPath is the upstream client's attach URL.
func attachPath(id, token string) string {
	return "/attach/" + id + "?sandbox_token=" + token
}

// attach re-attaches to a sandbox and requires SANDBOX_RUNNING.
func attach(t testing.TB, s *server, sb created) *client {
	t.Helper()
	c := mustDial(t, s, attachPath(sb.ID, sb.Token))
	c.expectStatus(t, statusRunning)
	return c
}

// listen keeps reading in the background, as a live client does (gorilla
// answers pings only while reading); the events arrive on the channel.
func (c *client) listen() <-chan event {
	events := make(chan event, 1000)
	go func() {
		defer close(events)
		for {
			ev, err := c.readE(time.Minute)
			if err != nil {
				return
			}
			events <- ev
		}
	}()
	return events
}

func TestAttachRefusals(t *testing.T) {
	s := startServer(t)
	owner, sb := createSandbox(t, s, sandboxInit(60))
	ownerEvents := owner.listen()

	tests := []struct {
		name   string
		path   string
		status string
		text   string
		code   int
	}{
		{"empty token", attachPath(sb.ID, ""), statusPermission, "Sandbox token is missing.", closeError},
		{"wrong token", attachPath(sb.ID, strings.Repeat("0", 64)), statusPermission, "Invalid sandbox token.", closeError},
		{"token of another length", attachPath(sb.ID, "x"), statusPermission, "Invalid sandbox token.", closeError},
		{"unknown id", attachPath(strings.Repeat("ab", 16), sb.Token), statusNotFound, "Sandbox not found", closeNotFound},
		{"not an id", attachPath("..%2F..%2Fetc", sb.Token), statusNotFound, "Sandbox not found", closeNotFound},
		{"attached elsewhere (live)", attachPath(sb.ID, sb.Token), statusInUse, "in use", closeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustDial(t, s, tt.path)
			ev := c.expectError(t, tt.status)
			assert.Contains(t, ev.Message, tt.text)
			c.expectClose(t, tt.code)
		})
	}

	resp, err := http.Get(s.httpURL("/attach/" + sb.ID))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "no sandbox_token parameter: the handshake is refused")

	// None of this disturbed the owner: it still drives its sandbox.
	owner.sendJSON(t, execRequest("bash", "echo still mine"))
	var out string
	for ev := range ownerEvents {
		if ev.Event == "stdout" {
			out += ev.Data
		}
		if ev.isStatus(statusExecDone) {
			break
		}
		require.NotEqual(t, "error", ev.Event, "the owner got %s", ev)
	}
	assert.Equal(t, "still mine\n", out)
	assert.NotContains(t, s.log.tail(maxLogTail), sb.Token, "tokens are never logged")
}

// TestAttachOverADeadSocket: the owner's socket stops answering pings (a
// client that froze or lost its network); a valid attach replaces it at
// once instead of hearing SANDBOX_IN_USE.
func TestAttachOverADeadSocket(t *testing.T) {
	s := startServer(t)
	owner, sb := createSandbox(t, s, sandboxInit(60))
	owner.bash(t, "echo kept > /root/mine")
	// The owner no longer reads, so it answers no ping.
	c := attach(t, s, sb)
	// The server's log reaches the harness through a pipe, a moment later.
	assert.Eventually(t, func() bool { return s.log.logged(sb.ID, "connection gave no sign of life") },
		5*time.Second, 10*time.Millisecond, "the probe, not the 30 s keepalive, replaced it")
	assert.Equal(t, "kept\n", c.bash(t, "cat /root/mine"))
	c.killSandbox(t)
}

// TestReconnectAfterADroppedConnection: a 20-line, 10-second script; the
// connection drops half-way; re-attach + reconnect yields every line
// exactly once, then DONE.
func TestReconnectAfterADroppedConnection(t *testing.T) {
	s := startServer(t)
	owner, sb := createSandbox(t, s, sandboxInit(60))
	owner.sendJSON(t, execRequest("bash", `for i in $(seq 1 20); do echo "line $i"; sleep 0.5; done`))
	owner.expectStatus(t, statusExecRunning)
	before := ""
	for strings.Count(before, "\n") < 5 {
		ev := owner.next(t, eventTimeout)
		require.Equal(t, "stdout", ev.Event, "got %s", ev)
		before += ev.Data
	}
	owner.drop()

	c := attach(t, s, sb)
	c.sendJSON(t, map[string]any{"action": "reconnect"})
	running := c.expectStatus(t, statusExecRunning)
	assert.Zero(t, running.DroppedBytes)
	res := c.collect(t)
	assert.Equal(t, 0, res.ExitCode)
	var want strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	// The owner's last lines may come again (it dropped before confirming
	// them): the offsets say so.
	assert.Equal(t, want.String(), resumeStdout(before, res), "every line exactly once, in order")

	// Nothing live any more: a reconnect gets no answer, the connection
	// stays usable.
	c.sendJSON(t, map[string]any{"action": "reconnect"})
	assert.Equal(t, "ok\n", c.bash(t, "echo ok"))
}

// TestDetachedOutputBeyondTheBufferReportsDroppedBytes: output larger than
// the reconnect buffer while nobody is attached: the oldest is dropped and
// the resumed stream says how much.
func TestDetachedOutputBeyondTheBufferReportsDroppedBytes(t *testing.T) {
	const total, buffer = 400000, 65536
	s := startServer(t, "--config", configFile(t, fmt.Sprintf("reconnect_buffer_bytes: %d\n", buffer)))
	owner, sb := createSandbox(t, s, sandboxInit(60))
	// The output starts once the owner is surely gone.
	owner.sendJSON(t, execRequest("bash", fmt.Sprintf(`sleep 2; head -c %d /dev/zero | tr '\0' x`, total)))
	owner.expectStatus(t, statusExecRunning)
	owner.drop()
	require.Eventually(t, func() bool { return s.log.logged(sb.ID, "execution ended while detached") },
		execTimeout, 50*time.Millisecond, "the execution never ended")

	c := attach(t, s, sb)
	c.sendJSON(t, map[string]any{"action": "reconnect"})
	running := c.expectStatus(t, statusExecRunning)
	res := c.collect(t)
	assert.Positive(t, running.DroppedBytes)
	assert.Equal(t, int64(total), running.DroppedBytes+int64(len(res.Stdout)), "what is kept plus what was dropped is everything")
	assert.LessOrEqual(t, len(res.Stdout), buffer)
	assert.Equal(t, strings.Repeat("x", len(res.Stdout)), res.Stdout, "only whole output, no garbage")
}
