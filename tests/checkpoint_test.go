package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkpointInit is the TypeScript client's init with checkpoints on.
func checkpointInit(extra map[string]any) map[string]any {
	init := sandboxInit(60)
	init["enable_checkpoint"] = true
	for k, v := range extra {
		init[k] = v
	}
	return init
}

// startCheckpointServer starts a server with a checkpoint directory of the
// test's own (outside the state dir, so it outlives a server).
func startCheckpointServer(t testing.TB, dir string, extra ...string) *server {
	t.Helper()
	return startServer(t, append([]string{"--checkpoint-path", dir}, extra...)...)
}

// checkpoint asks for a checkpoint and requires the whole sequence and the
// normal close.
func (c *client) checkpoint(t testing.TB) {
	t.Helper()
	c.sendJSON(t, map[string]any{"action": "checkpoint"})
	c.expectStatuses(t, eventTimeout, statusCheckpointing, statusDeleting, statusDeleted, statusCheckpointed)
	c.expectClose(t, closeNormal)
}

// restore attaches to a checkpointed sandbox: RESTORING, then RUNNING.
func restore(t testing.TB, s *server, sb created) *client {
	t.Helper()
	c := mustDial(t, s, attachPath(sb.ID, sb.Token))
	c.expectStatuses(t, eventTimeout, statusRestoring, statusRunning)
	return c
}

// counterScript starts, in the background, a python process that counts
// in memory and writes its count to /tmp/count every 20 ms.
const counterScript = `nohup python3 -c '
import time
n = 0
while True:
    n += 1
    with open("/tmp/count.new", "w") as f:
        f.write(str(n))
    import os; os.replace("/tmp/count.new", "/tmp/count")
    time.sleep(0.02)
' >/dev/null 2>&1 &
for i in $(seq 100); do [ -s /tmp/count ] && break; sleep 0.05; done`

func (c *client) count(t testing.TB) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(c.bash(t, "cat /tmp/count")))
	require.NoError(t, err)
	return n
}

func TestCheckpointKeepsMemoryProcessesAndFiles(t *testing.T) {
	dir := t.TempDir()
	s := startCheckpointServer(t, dir)
	c, sb := createSandbox(t, s, checkpointInit(nil))
	c.bash(t, counterScript+"\necho before > /root/file; echo tmp > /tmp/file")
	before := c.count(t)
	c.checkpoint(t)
	ids, err := s.runscList()
	require.NoError(t, err)
	assert.Empty(t, ids, "a checkpointed sandbox has no container")
	assert.FileExists(t, filepath.Join(dir, sb.ID, "meta.json"))

	c = restore(t, s, sb)
	assert.Equal(t, "before\ntmp\n", c.bash(t, "cat /root/file /tmp/file"))
	after := c.count(t)
	assert.GreaterOrEqual(t, after, before, "the counter continued from its count: it was not restarted")
	require.Eventually(t, func() bool { return c.count(t) > after }, eventTimeout, 50*time.Millisecond, "the counter runs on")
	c.killSandbox(t)
	assert.NoDirExists(t, filepath.Join(dir, sb.ID), "kill_sandbox removes the checkpoint")
}

func TestRestoreAfterAServerRestart(t *testing.T) {
	dir := t.TempDir()
	first := startCheckpointServer(t, dir)
	c, sb := createSandbox(t, first, checkpointInit(nil))
	c.bash(t, "echo survived > /root/file")
	c.checkpoint(t)
	first.stop()

	second := startCheckpointServer(t, dir)
	c = restore(t, second, sb)
	assert.Equal(t, "survived\n", c.bash(t, "cat /root/file"))
	c.killSandbox(t)
}

func TestFiveCheckpointRestoreCycles(t *testing.T) {
	dir := t.TempDir()
	s := startCheckpointServer(t, dir)
	c, sb := createSandbox(t, s, checkpointInit(nil))
	var want strings.Builder
	for i := 0; i < 5; i++ {
		line := fmt.Sprintf("cycle %d %s", i, strings.Repeat("é", i*1000))
		want.WriteString(line + "\n")
		c.bash(t, fmt.Sprintf("echo '%s' >> /root/log; head -c %d /dev/urandom > /root/blob%d; sha256sum /root/blob* > /root/sums", line, 100000*(i+1), i))
		sums := c.bash(t, "cat /root/sums")
		c.checkpoint(t)
		c = restore(t, s, sb)
		assert.Equal(t, want.String(), c.bash(t, "cat /root/log"), "cycle %d", i)
		assert.Equal(t, sums, c.bash(t, "sha256sum /root/blob*"), "cycle %d: every byte", i)
	}
	entries, err := os.ReadDir(filepath.Join(dir, sb.ID))
	require.NoError(t, err)
	images := 0
	for _, e := range entries {
		if e.IsDir() {
			images++
		}
	}
	assert.Equal(t, 1, images, "only the latest image is kept")
	c.killSandbox(t)
}

func TestCheckpointDuringAnExecution(t *testing.T) {
	s := startCheckpointServer(t, t.TempDir())
	c, _ := createSandbox(t, s, checkpointInit(nil))
	c.sendJSON(t, execRequest("bash", "echo started; sleep 60"))
	c.expectStatus(t, statusExecRunning)
	require.Equal(t, "started\n", c.next(t, eventTimeout).Data)
	c.sendJSON(t, map[string]any{"action": "checkpoint"})
	c.expectStatus(t, statusCheckpointing)
	ev := c.expectError(t, statusExecInProgress)
	assert.Equal(t, "Cannot checkpoint while an execution is in progress.", ev.Message)
	// Nothing changed: the execution runs on and the connection works.
	c.sendJSON(t, map[string]any{"action": "kill_process"})
	c.expectStatus(t, statusForceKilled)
	c.expectStatus(t, statusExecDone)
	assert.Equal(t, "fine\n", c.bash(t, "echo fine"))
}

func TestCheckpointOnAServerWithoutCheckpoints(t *testing.T) {
	s := startServer(t)
	c := mustDial(t, s, "/create")
	c.sendJSON(t, checkpointInit(nil))
	c.expectStatus(t, statusCreating)
	ev := c.expectError(t, statusCreationError)
	assert.Equal(t, "Checkpointing is not enabled on the server.", ev.Message)
	c.expectClose(t, closeError)

	c, _ = createSandbox(t, s, sandboxInit(60))
	c.sendJSON(t, map[string]any{"action": "checkpoint"})
	ev = c.expectError(t, statusCheckpointError)
	assert.Equal(t, "Checkpointing is not enabled on the server.", ev.Message)
	c.expectClose(t, closeError)
}

func TestRestoreOfACorruptImage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(path string, size int64) error
		files  string // which image files to damage ("" = all)
	}{
		{"every file cut in half", func(path string, size int64) error { return os.Truncate(path, size/2) }, ""},
		// runsc itself restores this one without noticing.
		{"bytes flipped in the memory pages", func(path string, size int64) error {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("corrupted"), size/2)
			return err
		}, "pages.img"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := startCheckpointServer(t, dir)
			c, sb := createSandbox(t, s, checkpointInit(nil))
			c.bash(t, "head -c 1000000 /dev/urandom > /root/data")
			c.checkpoint(t)
			damaged := 0
			require.NoError(t, filepath.WalkDir(filepath.Join(dir, sb.ID), func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() || d.Name() == "meta.json" || (tc.files != "" && d.Name() != tc.files) {
					return err
				}
				info, err := d.Info()
				if err != nil || info.Size() == 0 {
					return err
				}
				damaged++
				return tc.damage(path, info.Size())
			}))
			require.Positive(t, damaged)

			c = mustDial(t, s, attachPath(sb.ID, strings.Repeat("0", 64)))
			ev := c.expectError(t, statusPermission)
			assert.Equal(t, "Invalid sandbox token.", ev.Message, "a wrong token learns nothing of the damage")
			c.expectClose(t, closeError)

			c = mustDial(t, s, attachPath(sb.ID, sb.Token))
			c.expectStatus(t, statusRestoring)
			ev = c.expectError(t, statusRestoreError)
			assert.Contains(t, ev.Message, sb.ID)
			c.expectClose(t, closeError)
			assert.FileExists(t, filepath.Join(dir, sb.ID, "meta.json"), "left for an operator to inspect")
			ids, err := s.runscList()
			require.NoError(t, err)
			assert.Empty(t, ids, "a failed restore leaves no container")
		})
	}
}

func TestHandoffToAnotherClient(t *testing.T) {
	s := startCheckpointServer(t, t.TempDir())
	owner, sb := createSandbox(t, s, checkpointInit(map[string]any{"enable_sandbox_handoff": true}))
	owner.bash(t, "echo handed > /root/file")
	owner.sendJSON(t, execRequest("bash", "echo busy; sleep 60"))
	owner.expectStatus(t, statusExecRunning)
	require.Equal(t, "busy\n", owner.next(t, eventTimeout).Data)
	ownerEvents := owner.listen() // alive: it answers the probe

	c := restore(t, s, sb)
	var seen []string
	for ev := range ownerEvents {
		if ev.Event == "status_update" {
			seen = append(seen, ev.Status)
		}
	}
	assert.Equal(t, []string{statusLockRelease, statusCheckpointing, statusForceKilled, statusExecDone, statusCheckpointed}, seen)
	assert.Equal(t, "handed\n", c.bash(t, "cat /root/file"))
	c.killSandbox(t)
}

func TestIdleTimeoutCheckpointsInsteadOfDeleting(t *testing.T) {
	dir := t.TempDir()
	s := startCheckpointServer(t, dir)
	c, sb := createSandbox(t, s, checkpointInit(map[string]any{"idle_timeout": 2, "enable_idle_timeout_auto_checkpoint": true}))
	c.bash(t, "echo idle > /root/file")
	c.expectStatuses(t, eventTimeout, statusCheckpointing, statusDeleting, statusDeleted, statusCheckpointed)
	c.expectClose(t, closeNormal)
	assert.FileExists(t, filepath.Join(dir, sb.ID, "meta.json"))

	c = restore(t, s, sb)
	assert.Equal(t, "idle\n", c.bash(t, "cat /root/file"))
	c.killSandbox(t)
}
