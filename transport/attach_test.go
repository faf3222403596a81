package transport

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
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

// TestAProbeIsAnsweredOnlyByItsOwnPong: an owner that answers an older
// ping while ignoring the probe's is dead for the probe; the attach
// replaces it instead of hearing SANDBOX_IN_USE.
func TestAProbeIsAnsweredOnlyByItsOwnPong(t *testing.T) {
	s := newTestServer(t, 4)
	steps := linesExec(s)
	owner := s.dial(t, "/create")
	created := owner.create()
	pings := make(chan string, 10)
	owner.ws.SetPingHandler(func(payload string) error { pings <- payload; return nil }) // answers nothing by itself
	owner.send(map[string]any{"language": "bash", "code": "lines"})
	owner.expectStatus(actors.StatusExecRunning)
	go func() {
		for {
			if _, _, err := owner.ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	older := <-pings // the confirmation ping after RUNNING

	attached := make(chan *wsClient)
	go func() {
		c := s.dial(t, attachPath(created["sandbox_id"].(string), created["sandbox_token"].(string)))
		attached <- c
	}()
	probe := <-pings
	require.NotEqual(t, older, probe)
	// The pong of the older ping, once the probe is under way.
	require.NoError(t, owner.ws.WriteControl(websocket.PongMessage, []byte(older), time.Now().Add(time.Second)))
	c := <-attached
	c.expectStatus(actors.StatusRunning)
	close(steps)
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

// linesExec makes the fake runtime's executions print what the test sends
// on the returned channel, until it is closed.
func linesExec(s *testServer) chan string {
	steps := make(chan string)
	s.rt.Handler = func(e runsc.FakeExec) int {
		for line := range steps {
			if _, err := io.WriteString(e.Stdout, line); err != nil {
				return 1
			}
		}
		return 0
	}
	return steps
}

// chunk is one stdout event: its data and where it starts in the stream.
type chunk struct {
	data   string
	offset int
}

// readChunks reads stdout events up to DONE.
func (c *wsClient) readChunks() []chunk {
	c.t.Helper()
	var chunks []chunk
	for {
		ev := c.next()
		if ev["event"] == "stdout" {
			require.Contains(c.t, ev, "offset", "every output chunk says where it starts")
			chunks = append(chunks, chunk{ev["data"].(string), int(ev["offset"].(float64))})
			continue
		}
		require.Equal(c.t, actors.StatusExecDone, ev["status"], "event %v", ev)
		return chunks
	}
}

// resume appends chunks to what a client already has, as a client does
// that skips by offset: a chunk replayed in part adds only its new part.
func resume(have string, chunks []chunk) string {
	for _, ch := range chunks {
		if end := ch.offset + len(ch.data); end > len(have) {
			have += ch.data[len(have)-ch.offset:]
		}
	}
	return have
}

// TestReconnectReplaysWhatTheClientNeverConfirmed: the owner read "1\n"
// but vanished before answering the ping after it, so the server cannot
// know it arrived: the replay has it again, at offset 0, and a client
// skipping by offset gets every byte exactly once.
func TestReconnectReplaysWhatTheClientNeverConfirmed(t *testing.T) {
	s := newTestServer(t, 4)
	steps := linesExec(s)
	owner := s.dial(t, "/create")
	created := owner.create()
	owner.send(map[string]any{"language": "bash", "code": "lines"})
	owner.expectStatus(actors.StatusExecRunning)
	steps <- "1\n"
	first := owner.next()
	assert.Equal(t, "1\n", first["data"])
	assert.Equal(t, float64(0), first["offset"])
	// The connection drops without a close frame, the ping unread.
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
	chunks := c.readChunks()
	require.NotEmpty(t, chunks)
	assert.Equal(t, 0, chunks[0].offset, "the unconfirmed chunk comes again")
	assert.Equal(t, "1\n2\n3\n4\n", resume("", chunks))
	assert.Equal(t, "1\n2\n3\n4\n", resume("1\n", chunks), "exactly once for a client that had the first line")
}

// TestReconnectSkipsWhatTheClientConfirmed: the owner answered the ping
// after "1\n" before it dropped: the replay starts after it.
func TestReconnectSkipsWhatTheClientConfirmed(t *testing.T) {
	s := newTestServer(t, 4)
	steps := linesExec(s)
	owner := s.dial(t, "/create")
	created := owner.create()
	answered := make(chan string, 10)
	owner.ws.SetPingHandler(func(payload string) error {
		err := owner.ws.WriteControl(websocket.PongMessage, []byte(payload), time.Now().Add(time.Second))
		answered <- payload
		return err
	})
	owner.send(map[string]any{"language": "bash", "code": "lines"})
	owner.expectStatus(actors.StatusExecRunning)
	steps <- "1\n"
	assert.Equal(t, "1\n", owner.next()["data"])
	for len(answered) > 0 { // pings read so far came before "1\n"
		<-answered
	}
	readDone := make(chan struct{})
	go func() { // reads, so answers the ping, until the close is echoed
		defer close(readDone)
		_, _, _ = owner.ws.ReadMessage()
	}()
	select {
	case p := <-answered:
		require.NotEmpty(t, p, "a confirmation ping names its batch")
	case <-time.After(5 * time.Second):
		t.Fatal("no confirmation ping after the output")
	}
	// The server reads the pong before the close frame that follows it,
	// and echoes the close once it did.
	require.NoError(t, owner.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second)))
	<-readDone
	c := s.dial(t, attachPath(created["sandbox_id"].(string), created["sandbox_token"].(string)))
	c.expectStatus(actors.StatusRunning)
	steps <- "2\n"
	c.send(map[string]any{"action": "reconnect"})
	c.expectStatus(actors.StatusExecRunning)
	close(steps)
	assert.Equal(t, []chunk{{"2\n", 2}}, c.readChunks())
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
