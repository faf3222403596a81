package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/pool/snapshots"
)

// snapshotDir makes a directory with snapshots of the given sizes.
func snapshotDir(t *testing.T, sizes map[string]int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "snaps")
	store, err := snapshots.New(snapshots.Config{Dir: dir, RunscVersion: "v-pin"})
	require.NoError(t, err)
	for name, size := range sizes {
		_, err := store.Create(context.Background(), name, "sb-"+name, func(_ context.Context, dest string) error {
			return os.WriteFile(dest, bytes.Repeat([]byte("x"), size), 0o600)
		})
		require.NoError(t, err)
	}
	return dir
}

func runSnapshots(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = snapshotsCommand(args, envFrom(env), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestSnapshotsList(t *testing.T) {
	dir := snapshotDir(t, map[string]int{"base": 3 << 20, "py": 10})
	out, _, err := runSnapshots(t, nil, "list", "--filesystem-snapshot-path", dir)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3)
	assert.Regexp(t, `^NAME\s+SIZE\s+CREATED\s+SOURCE SANDBOX\s+SHA256\s+RUNSC$`, lines[0])
	assert.Regexp(t, `^base\s+3\.0 MiB\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+sb-base\s+[0-9a-f]{12}\s+v-pin$`, lines[1])
	assert.Regexp(t, `^py\s+10 B\s`, lines[2])

	out, _, err = runSnapshots(t, nil, "list", "--json", "--filesystem-snapshot-path", dir)
	require.NoError(t, err)
	var infos []snapshots.Info
	require.NoError(t, json.Unmarshal([]byte(out), &infos))
	require.Len(t, infos, 2)
	assert.Equal(t, "base", infos[0].Name)
	assert.Equal(t, int64(3<<20), infos[0].Size)
	assert.Len(t, infos[0].SHA256, 64)
}

func TestSnapshotsListEmptyJSONIsAnArray(t *testing.T) {
	dir := snapshotDir(t, nil)
	out, _, err := runSnapshots(t, map[string]string{"SANDPOOL_FILESYSTEM_SNAPSHOT_PATH": dir}, "list", "--json")
	require.NoError(t, err)
	assert.Equal(t, "[]\n", out)
}

func TestSnapshotsRemove(t *testing.T) {
	dir := snapshotDir(t, map[string]int{"a": 1, "b": 1, "c": 1})
	config := writeConfig(t, "c.yaml", "filesystem_snapshot_path: "+dir+"\n")

	out, _, err := runSnapshots(t, nil, "rm", "--config", config, "a")
	require.NoError(t, err)
	assert.Equal(t, "removed a\n", out)

	out, _, err = runSnapshots(t, nil, "rm", "b", "missing", "--json", "--config", config)
	assert.ErrorIs(t, err, snapshots.ErrNotFound, "a missing name fails the command")
	assert.JSONEq(t, `{"removed":["b"]}`, out, "the others are still removed")

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "only c's tar and sidecar are left")
}

func TestSnapshotsCommandErrors(t *testing.T) {
	dir := snapshotDir(t, nil)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no subcommand", nil, nil, "usage: sandpool snapshots"},
		{"unknown subcommand", []string{"prune", "--filesystem-snapshot-path", dir}, nil, "unknown snapshots command"},
		{"not configured", []string{"list"}, nil, "no snapshot directory configured"},
		{"missing directory", []string{"list", "--filesystem-snapshot-path", filepath.Join(dir, "nope")}, nil, "does not exist"},
		{"rm without names", []string{"rm", "--filesystem-snapshot-path", dir}, nil, "at least one name"},
		{"rm a bad name", []string{"rm", "../etc", "--filesystem-snapshot-path", dir}, nil, "invalid snapshot name"},
		{"list with names", []string{"list", "x", "--filesystem-snapshot-path", dir}, nil, "takes no names"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runSnapshots(t, tc.env, tc.args...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := os.Stat(filepath.Join(dir, "nope"))
	assert.ErrorIs(t, err, os.ErrNotExist, "list never creates the directory")
}

func TestRunDispatchesSnapshots(t *testing.T) {
	err := run([]string{"snapshots"}, envFrom(nil), &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "usage: sandpool snapshots")
}

func TestHelpListsCommands(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"serve", "-h"}} {
		var out bytes.Buffer
		require.NoError(t, run(args, envFrom(nil), &out), "%v", args)
		assert.Contains(t, out.String(), "sandpool snapshots list|rm", "%v", args)
	}
	var out bytes.Buffer
	require.NoError(t, snapshotsCommand([]string{"--help"}, envFrom(nil), &out, &out))
	assert.Contains(t, out.String(), "usage: sandpool snapshots list")
}
