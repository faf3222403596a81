package actors

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/pool/snapshots"
	"github.com/sandpool/sandpool/runsc"
)

func newStore(t *testing.T) *snapshots.Store {
	t.Helper()
	store, err := snapshots.New(snapshots.Config{Dir: filepath.Join(t.TempDir(), "snaps")})
	require.NoError(t, err)
	return store
}

func withStore(store *snapshots.Store) func(*Config) {
	return func(c *Config) { c.Snapshots = store }
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestSnapshotErrors(t *testing.T) {
	tests := []struct {
		name    string
		store   bool
		rt      func(*runsc.Fake)
		first   func(t *testing.T, h *harness) // puts the sandbox in the state under test
		snap    string
		message string
	}{
		{name: "disabled", snap: "x", message: "Filesystem snapshot is not enabled on the server."},
		{name: "bad name", store: true, snap: "../x", message: `Invalid snapshot name "../x"`},
		{name: "runtime fails", store: true, snap: "x",
			rt:      func(rt *runsc.Fake) { rt.SnapshotErr = errors.New("tar exploded") },
			message: "Failed to create filesystem snapshot 'x': snapshot x: snapshot sandbox"},
		{name: "one at a time", store: true, snap: "x",
			rt: func(rt *runsc.Fake) { rt.SnapshotDelay = time.Minute },
			first: func(t *testing.T, h *harness) {
				h.ref.Send(SnapshotFilesystem{Name: "first"})
				h.sink.until(t, StatusSnapshotCreating)
			},
			message: "A filesystem snapshot is already in progress."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := runsc.NewFake()
			if tt.rt != nil {
				tt.rt(rt)
			}
			var opts []func(*Config)
			var store *snapshots.Store
			if tt.store {
				store = newStore(t)
				opts = append(opts, withStore(store))
			}
			h, err := start(t, rt, Settings{}, opts...)
			require.NoError(t, err)
			if tt.first != nil {
				tt.first(t, h)
			}
			h.ref.Send(SnapshotFilesystem{Name: tt.snap})
			_, _, _, last := h.sink.until(t, StatusSnapshotError)
			assert.Contains(t, last.Message, tt.message)
			assert.Equal(t, EventError, h.sink.next(t).Kind)
			if store != nil && tt.first == nil {
				assert.Empty(t, dirNames(t, store.Dir()), "a failed snapshot leaves no file")
			}
			// The sandbox is still usable.
			h.ref.Send(Execute{Language: "bash", Code: "ok", HasCode: true})
			_, stdout, _, _ := h.sink.until(t, StatusExecDone)
			assert.Equal(t, "ok", stdout)
		})
	}
}

func TestSnapshotIsNeverReapedByIdleTimeout(t *testing.T) {
	rt := runsc.NewFake()
	rt.SnapshotDelay = 500 * time.Millisecond
	store := newStore(t)
	h, err := start(t, rt, Settings{IdleTimeout: 100 * time.Millisecond}, withStore(store))
	require.NoError(t, err)
	h.ref.Send(SnapshotFilesystem{Name: "slow"})
	statuses, _, _, _ := h.sink.until(t, StatusSnapshotCreated)
	assert.Equal(t, []string{StatusSnapshotCreating, StatusSnapshotCreated}, statuses)
	// Idle time counts from the snapshot's end.
	statuses, _, _, _ = h.sink.until(t, StatusDeleted)
	assert.Equal(t, []string{StatusDeleting, StatusDeleted}, statuses)
	_, err = store.Stat("slow")
	assert.NoError(t, err)
}

func TestSnapshotTimeoutAbandonsIt(t *testing.T) {
	rt := runsc.NewFake()
	rt.SnapshotDelay = time.Minute
	store := newStore(t)
	h, err := start(t, rt, Settings{}, withStore(store), func(c *Config) { c.SnapshotTimeout = 100 * time.Millisecond })
	require.NoError(t, err)
	h.ref.Send(SnapshotFilesystem{Name: "stuck"})
	_, _, _, last := h.sink.until(t, StatusSnapshotError)
	assert.Contains(t, last.Message, "took longer than 100ms")
	assert.Empty(t, dirNames(t, store.Dir()))
}

func TestCreateFromSnapshotClosesItAndReportsCorruption(t *testing.T) {
	store := newStore(t)
	_, err := store.Create(t.Context(), "bad", "sb", func(_ context.Context, dest string) error {
		return os.WriteFile(dest, []byte("not a tar"), 0o600)
	})
	require.NoError(t, err)
	sn, err := store.Open("bad")
	require.NoError(t, err)

	rt := runsc.NewFake()
	_, err = start(t, rt, Settings{}, func(c *Config) { c.From = sn })
	assert.ErrorIs(t, err, snapshots.ErrCorrupt)
	assert.Contains(t, err.Error(), "bad: not a fake snapshot")
	assert.ErrorIs(t, sn.Close(), os.ErrClosed, "the actor closed the snapshot")
	assert.Empty(t, rt.Live())
}
