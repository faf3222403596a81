package durable

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestSyncDir(t *testing.T) {
	require.NoError(t, SyncDir(t.TempDir()))
	assert.ErrorIs(t, SyncDir(filepath.Join(t.TempDir(), "missing")), fs.ErrNotExist)
}

func TestWriteFile(t *testing.T) {
	tests := []struct {
		name string
		old  string // what path holds before, if anything
	}{
		{name: "creates", old: ""},
		{name: "replaces", old: "old contents that are longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "meta.json")
			if tt.old != "" {
				require.NoError(t, os.WriteFile(path, []byte(tt.old), 0o644))
			}
			renamed, err := WriteFile(path, []byte("new"), ".tmp-*.json")
			require.NoError(t, err)
			assert.True(t, renamed)
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, "new", string(data))
			st, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, fs.FileMode(0o600), st.Mode().Perm(), "private, as os.CreateTemp makes it")
			assert.Equal(t, []string{"meta.json"}, names(t, dir), "no temporary file is left")
		})
	}
}

func TestWriteFileFailures(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) (path string)
	}{
		{
			name: "no directory",
			prepare: func(t *testing.T, dir string) string {
				return filepath.Join(dir, "missing", "meta.json")
			},
		},
		{
			name: "a directory holds the name",
			prepare: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "meta.json")
				require.NoError(t, os.MkdirAll(filepath.Join(path, "child"), 0o700))
				return path
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.prepare(t, dir)
			before := names(t, dir)
			renamed, err := WriteFile(path, []byte("new"), ".tmp-*.json")
			require.Error(t, err)
			assert.False(t, renamed)
			assert.Equal(t, before, names(t, dir), "the temporary file is removed")
		})
	}
}

func TestIgnoreNotExist(t *testing.T) {
	other := errors.New("disk on fire")
	tests := []struct {
		name string
		err  error
		want error
	}{
		{name: "nil", err: nil, want: nil},
		{name: "not exist", err: fs.ErrNotExist, want: nil},
		{name: "wrapped not exist", err: fmt.Errorf("remove x: %w", fs.ErrNotExist), want: nil},
		{name: "os error", err: os.Remove(filepath.Join(t.TempDir(), "missing")), want: nil},
		{name: "other", err: other, want: other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, IgnoreNotExist(tt.err))
		})
	}
}

func TestRandomHex(t *testing.T) {
	for _, n := range []int{0, 4, 8} {
		s := RandomHex(n)
		assert.Len(t, s, 2*n)
		_, err := hex.DecodeString(s)
		assert.NoError(t, err)
	}
	assert.NotEqual(t, RandomHex(8), RandomHex(8))
}

func TestFlockExcludesOtherOpenFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	a, err := os.Open(path)
	require.NoError(t, err)
	defer a.Close()
	b, err := os.Open(path)
	require.NoError(t, err)
	defer b.Close()

	require.NoError(t, Flock(a, unix.LOCK_EX|unix.LOCK_NB))
	assert.ErrorIs(t, Flock(b, unix.LOCK_EX|unix.LOCK_NB), unix.EWOULDBLOCK)
	require.NoError(t, Flock(a, unix.LOCK_UN))
	assert.NoError(t, Flock(b, unix.LOCK_EX|unix.LOCK_NB))
}

func TestRemoveUnlocked(t *testing.T) {
	tests := []struct {
		name        string
		prepare     func(t *testing.T, path string)
		lock        bool
		wantRemoved bool
	}{
		{name: "missing", prepare: func(*testing.T, string) {}, wantRemoved: false},
		{name: "file", prepare: writeFile, wantRemoved: true},
		{name: "directory with contents", prepare: makeTree, wantRemoved: true},
		{name: "locked file", prepare: writeFile, lock: true, wantRemoved: false},
		{name: "locked directory", prepare: makeTree, lock: true, wantRemoved: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leftover")
			tt.prepare(t, path)
			if tt.lock {
				f, err := os.Open(path)
				require.NoError(t, err)
				defer f.Close()
				require.NoError(t, unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB))
			}
			removed, err := RemoveUnlocked(path)
			require.NoError(t, err)
			assert.Equal(t, tt.wantRemoved, removed)
			_, err = os.Lstat(path)
			exists := err == nil
			assert.Equal(t, tt.lock, exists, "only a locked path stays")
		})
	}
}

func writeFile(t *testing.T, path string) {
	require.NoError(t, os.WriteFile(path, []byte("x"), 0o600))
}

func makeTree(t *testing.T, path string) {
	require.NoError(t, os.MkdirAll(filepath.Join(path, "sub"), 0o700))
	writeFile(t, filepath.Join(path, "sub", "f"))
}

// names lists dir's entries.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
