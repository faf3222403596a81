package transport

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool"
	"github.com/sandpool/sandpool/pool/snapshots"
	"github.com/sandpool/sandpool/runsc"
)

// newSnapshotServer serves the fake runtime with a snapshot store.
func newSnapshotServer(t *testing.T) (*testServer, *snapshots.Store) {
	t.Helper()
	store, err := snapshots.New(snapshots.Config{Dir: filepath.Join(t.TempDir(), "snapshots"), RunscVersion: "test"})
	require.NoError(t, err)
	return startTestServer(t, pool.Config{Limits: pool.Limits{MaxSandboxes: 8}, Snapshots: store}), store
}

func (c *wsClient) snapshot(name string) {
	c.t.Helper()
	c.send(map[string]any{"action": "snapshot_filesystem", "name": name})
	c.expectStatus(actors.StatusSnapshotCreating)
	c.expectStatus(actors.StatusSnapshotCreated)
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestSnapshotThenCreateFromIt(t *testing.T) {
	s, store := newSnapshotServer(t)
	c := s.dial(t, "/create")
	src := c.create()
	c.snapshot("base")

	info, err := store.Stat("base")
	require.NoError(t, err)
	assert.Equal(t, src["sandbox_id"], info.SourceSandbox)

	c2 := s.dial(t, "/create")
	c2.send(map[string]any{"idle_timeout": 60, "filesystem_snapshot_name": "base"})
	c2.expectStatus(actors.StatusCreating)
	id := c2.next()["sandbox_id"].(string)
	c2.expectStatus(actors.StatusRunning)
	assert.Equal(t, runsc.FakeSnapshotPrefix+"sandbox "+src["sandbox_id"].(string)+"\n", string(s.rt.Rootfs(id)))
	assert.Regexp(t, "^create "+id+" from /proc/"+strconv.Itoa(os.Getpid())+"/fd/[0-9]+$", s.rt.Calls()[2], "runsc gets the opened tar")
}

func TestSnapshotWhileExecuting(t *testing.T) {
	s, _ := newSnapshotServer(t)
	c := s.dial(t, "/create")
	c.create()
	c.send(map[string]any{"language": "bash", "code": "sleep"})
	c.expectStatus(actors.StatusExecRunning)
	c.snapshot("mid-run")
	c.send(map[string]any{"action": "kill_process"})
	c.expectStatus(actors.StatusForceKilled)
	c.expectStatus(actors.StatusExecDone)
}

func TestSnapshotRequestErrors(t *testing.T) {
	tests := []struct {
		name    string
		msg     map[string]any
		message string
	}{
		{"missing name", map[string]any{"action": "snapshot_filesystem"}, "'name' is required"},
		{"null name", map[string]any{"action": "snapshot_filesystem", "name": nil}, "'name' is required"},
		{"name is a number", map[string]any{"action": "snapshot_filesystem", "name": 42}, "'name' must be a string"},
		{"empty name", map[string]any{"action": "snapshot_filesystem", "name": ""}, "Invalid snapshot name"},
		{"parent directory", map[string]any{"action": "snapshot_filesystem", "name": "../x"}, "Invalid snapshot name"},
		{"slash", map[string]any{"action": "snapshot_filesystem", "name": "a/b"}, "Invalid snapshot name"},
		{"NUL", map[string]any{"action": "snapshot_filesystem", "name": "a\x00b"}, "Invalid snapshot name"},
		{"200 characters", map[string]any{"action": "snapshot_filesystem", "name": strings.Repeat("n", 200)}, "Invalid snapshot name"},
	}
	s, store := newSnapshotServer(t)
	c := s.dial(t, "/create")
	c.create()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.send(tt.msg)
			c.expectError(actors.StatusSnapshotError, tt.message)
		})
	}
	// The connection stays usable and nothing was written.
	out, _ := c.run("bash", "still here")
	assert.Equal(t, "still here", out)
	assert.Empty(t, dirEntries(t, store.Dir()))
	assert.Len(t, s.rt.Live(), 1)
}

func TestSnapshotsDisabled(t *testing.T) {
	s := newTestServer(t, 4)
	c := s.dial(t, "/create")
	c.create()
	c.send(map[string]any{"action": "snapshot_filesystem", "name": "base"})
	c.expectError(actors.StatusSnapshotError, "Filesystem snapshot is not enabled on the server.")
	out, _ := c.run("bash", "open")
	assert.Equal(t, "open", out)

	c2 := s.dial(t, "/create")
	c2.send(map[string]any{"filesystem_snapshot_name": "base"})
	c2.expectStatus(actors.StatusCreating)
	c2.expectError(actors.StatusCreationError, "Filesystem snapshot is not enabled on the server.")
	c2.expectClose(actors.CloseError)
}

func TestCreateFromBadSnapshot(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, store *snapshots.Store)
		message string
	}{
		{"missing", func(*testing.T, *snapshots.Store) {}, "Filesystem snapshot not found: snap"},
		{"corrupt tar", func(t *testing.T, store *snapshots.Store) {
			_, err := store.Create(context.Background(), "snap", "sb", func(_ context.Context, dest string) error {
				return os.WriteFile(dest, []byte("garbage, not a tar"), 0o600)
			})
			require.NoError(t, err)
		}, "Filesystem snapshot is corrupt: snap: "},
		{"truncated tar", func(t *testing.T, store *snapshots.Store) {
			info, err := store.Create(context.Background(), "snap", "sb", func(_ context.Context, dest string) error {
				return os.WriteFile(dest, []byte(runsc.FakeSnapshotPrefix+"data"), 0o600)
			})
			require.NoError(t, err)
			require.NoError(t, os.Truncate(filepath.Join(store.Dir(), info.File), 4))
		}, "Filesystem snapshot is corrupt: snap: the tar has 4 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, store := newSnapshotServer(t)
			tt.prepare(t, store)
			c := s.dial(t, "/create")
			c.send(map[string]any{"filesystem_snapshot_name": "snap"})
			c.expectStatus(actors.StatusCreating)
			c.expectError(actors.StatusCreationError, tt.message)
			c.expectClose(actors.CloseError)
			require.Eventually(t, func() bool { return s.pool.Live() == 0 }, 2*time.Second, 10*time.Millisecond)
			assert.Empty(t, s.rt.Live(), "nothing left behind")
		})
	}
}

func TestKillDuringSnapshotWinsAndLeavesNothing(t *testing.T) {
	s, store := newSnapshotServer(t)
	s.rt.SnapshotDelay = time.Minute // a snapshot that would take a minute
	c := s.dial(t, "/create")
	c.create()
	c.send(map[string]any{"action": "snapshot_filesystem", "name": "slow"})
	c.expectStatus(actors.StatusSnapshotCreating)
	require.Eventually(t, func() bool { return len(dirEntries(t, store.Dir())) > 0 }, 2*time.Second, 5*time.Millisecond,
		"the snapshot is being written")

	start := time.Now()
	c.send(map[string]any{"action": "kill_sandbox"})
	for _, st := range []string{actors.StatusKilling, actors.StatusDeleting, actors.StatusDeleted, actors.StatusKilled} {
		c.expectStatus(st)
	}
	c.expectClose(actors.CloseNormal)
	assert.Less(t, time.Since(start), 2*time.Second, "the kill wins within 2 s")
	assert.Empty(t, dirEntries(t, store.Dir()), "no partial snapshot or temporary file")
	assert.Empty(t, s.rt.Live())
}
