package snapshots

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(Config{Dir: filepath.Join(t.TempDir(), "snaps"), RunscVersion: "v-test"})
	require.NoError(t, err)
	return s
}

// writeBytes is a WriteFunc that writes data the way runsc does: it opens
// the destination itself.
func writeBytes(data []byte) WriteFunc {
	return func(_ context.Context, dest string) error {
		return os.WriteFile(dest, data, 0o600)
	}
}

func sha(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// files lists the directory's file names.
func files(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.Dir())
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readSnapshot(t *testing.T, s *Store, name string) []byte {
	t.Helper()
	sn, err := s.Open(name)
	require.NoError(t, err)
	defer sn.Close()
	data, err := os.ReadFile(sn.Path())
	require.NoError(t, err)
	return data
}

func TestValidateName(t *testing.T) {
	for _, name := range []string{"a", "Z", "0", "base", "py-3.11_venv", "a..b", strings.Repeat("x", 128)} {
		assert.NoError(t, ValidateName(name), name)
	}
	for _, name := range []string{
		"", ".", "..", "../x", "a/b", "/abs", "-x", "_x", ".hidden", "a\x00b", "a b", "snäp",
		"a\n", strings.Repeat("x", 129), strings.Repeat("y", 200),
	} {
		err := ValidateName(name)
		assert.ErrorIs(t, err, ErrInvalidName, "%q", name)
	}
}

func TestCreateWritesTarAndSidecar(t *testing.T) {
	s := newStore(t)
	content := []byte("tar bytes")
	before := time.Now()
	info, err := s.Create(context.Background(), "base", "sandbox-1", writeBytes(content))
	require.NoError(t, err)

	assert.Equal(t, "base", info.Name)
	assert.Equal(t, int64(len(content)), info.Size)
	assert.Equal(t, sha(content), info.SHA256)
	assert.Equal(t, "sandbox-1", info.SourceSandbox)
	assert.Equal(t, "v-test", info.RunscVersion)
	assert.WithinRange(t, info.Created, before.Add(-time.Second), time.Now().Add(time.Second))
	assert.ElementsMatch(t, []string{"base.json", info.File}, files(t, s))
	st, err := os.Stat(filepath.Join(s.Dir(), info.File))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	var sidecar map[string]any
	raw, err := os.ReadFile(filepath.Join(s.Dir(), "base.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &sidecar))
	for _, key := range []string{"name", "file", "size", "sha256", "created", "source_sandbox", "runsc_version"} {
		assert.Contains(t, sidecar, key)
	}
	assert.Equal(t, content, readSnapshot(t, s, "base"))
}

func TestCreateRejectsBadNamesBeforeTouchingTheDisk(t *testing.T) {
	s := newStore(t)
	for _, name := range []string{"../x", "a/b", "", strings.Repeat("n", 200)} {
		called := false
		_, err := s.Create(context.Background(), name, "sb", func(context.Context, string) error {
			called = true
			return nil
		})
		assert.ErrorIs(t, err, ErrInvalidName)
		assert.False(t, called)
	}
	assert.Empty(t, files(t, s))
	assert.NoDirExists(t, filepath.Join(filepath.Dir(s.Dir()), "x"))
}

func TestReplaceIsAtomicAndKeepsOpenReaders(t *testing.T) {
	s := newStore(t)
	first, err := s.Create(context.Background(), "env", "sb1", writeBytes([]byte("version 1")))
	require.NoError(t, err)
	old, err := s.Open("env")
	require.NoError(t, err)
	defer old.Close()

	second, err := s.Create(context.Background(), "env", "sb2", writeBytes([]byte("version 2")))
	require.NoError(t, err)
	assert.NotEqual(t, first.File, second.File)

	// A sandbox being created from the old version still reads it.
	data, err := os.ReadFile(old.Path())
	require.NoError(t, err)
	assert.Equal(t, "version 1", string(data))
	// New readers get the new one; the old tar is gone from the directory.
	assert.Equal(t, "version 2", string(readSnapshot(t, s, "env")))
	assert.ElementsMatch(t, []string{"env.json", second.File}, files(t, s))
}

func TestFailedSnapshotKeepsOldVersionAndLeavesNothing(t *testing.T) {
	boom := errors.New("runsc tar failed")
	tests := []struct {
		name  string
		ctx   func() (context.Context, context.CancelFunc)
		write WriteFunc
		want  error
	}{
		{
			name: "write fails half-way",
			ctx:  func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			write: func(_ context.Context, dest string) error {
				_ = os.WriteFile(dest, []byte("partial"), 0o600)
				return boom
			},
			want: boom,
		},
		{
			name: "cancelled while writing",
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(50*time.Millisecond, cancel)
				return ctx, cancel
			},
			write: func(ctx context.Context, dest string) error {
				_ = os.WriteFile(dest, []byte("partial"), 0o600)
				<-ctx.Done()
				return ctx.Err()
			},
			want: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			v1, err := s.Create(context.Background(), "snap", "sb1", writeBytes([]byte("good")))
			require.NoError(t, err)
			ctx, cancel := tt.ctx()
			defer cancel()
			_, err = s.Create(ctx, "snap", "sb2", tt.write)
			assert.ErrorIs(t, err, tt.want)

			info, err := s.Stat("snap")
			require.NoError(t, err)
			assert.Equal(t, v1, info)
			assert.Equal(t, "good", string(readSnapshot(t, s, "snap")))
			assert.ElementsMatch(t, []string{"snap.json", v1.File}, files(t, s), "no temporary file left")
		})
	}
}

func TestHashFollowsAGrowingFile(t *testing.T) {
	// 24 MiB in 1 MiB writes with pauses: the follower hashes most of it
	// while it is written.
	content := make([]byte, 24<<20)
	for i := range content {
		content[i] = byte(i * 7)
	}
	tests := []struct {
		name  string
		write WriteFunc
	}{
		{"appending writer", func(_ context.Context, dest string) error {
			f, err := os.OpenFile(dest, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			for off := 0; off < len(content); off += 1 << 20 {
				if _, err := f.Write(content[off : off+1<<20]); err != nil {
					return err
				}
				time.Sleep(2 * time.Millisecond)
			}
			return nil
		}},
		{"writer that truncates what was hashed", func(_ context.Context, dest string) error {
			if err := os.WriteFile(dest, content, 0o600); err != nil {
				return err
			}
			time.Sleep(3 * followInterval) // let the follower hash it all
			return os.Truncate(dest, 10<<20)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			info, err := s.Create(context.Background(), "big", "sb", tt.write)
			require.NoError(t, err)
			if tt.name == "appending writer" {
				assert.Equal(t, sha(content), info.SHA256)
				assert.Equal(t, int64(len(content)), info.Size)
			}
			data := readSnapshot(t, s, "big")
			assert.Equal(t, sha(data), info.SHA256, "the recorded hash is the file's")
		})
	}
}

func TestOpenErrors(t *testing.T) {
	s := newStore(t)
	info, err := s.Create(context.Background(), "snap", "sb", writeBytes([]byte("0123456789")))
	require.NoError(t, err)

	_, err = s.Open("missing")
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = s.Open("../etc")
	assert.ErrorIs(t, err, ErrInvalidName)

	require.NoError(t, os.Truncate(filepath.Join(s.Dir(), info.File), 3))
	_, err = s.Open("snap")
	assert.ErrorIs(t, err, ErrCorrupt)

	require.NoError(t, os.Remove(filepath.Join(s.Dir(), info.File)))
	_, err = s.Open("snap")
	assert.ErrorIs(t, err, ErrCorrupt)

	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), "bad.json"), []byte("{"), 0o600))
	_, err = s.Open("bad")
	assert.ErrorIs(t, err, ErrCorrupt)
	// A sidecar may not point outside its own name's files.
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), "evil.json"), []byte(`{"name":"evil","file":"../x@1.tar"}`), 0o600))
	_, err = s.Open("evil")
	assert.ErrorIs(t, err, ErrCorrupt)
}

func TestListAndRemove(t *testing.T) {
	s := newStore(t)
	for _, name := range []string{"b", "a", "c"} {
		_, err := s.Create(context.Background(), name, "sb-"+name, writeBytes([]byte(name)))
		require.NoError(t, err)
	}
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), "broken.json"), []byte("not json"), 0o600))

	infos, err := s.List()
	assert.ErrorIs(t, err, ErrCorrupt, "the broken sidecar is reported")
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	assert.Equal(t, []string{"a", "b", "c"}, names)

	bInfo, err := s.Stat("b")
	require.NoError(t, err)
	require.NoError(t, s.Remove("b"))
	assert.NoFileExists(t, filepath.Join(s.Dir(), "b.json"))
	assert.NoFileExists(t, filepath.Join(s.Dir(), bInfo.File))
	assert.ErrorIs(t, s.Remove("b"), ErrNotFound)
	assert.ErrorIs(t, s.Remove("../a"), ErrInvalidName)
	require.NoError(t, s.Remove("broken"), "a snapshot with broken metadata can be removed")
}

func TestCleanRemovesLeftoversButNotLiveWrites(t *testing.T) {
	s := newStore(t)
	kept, err := s.Create(context.Background(), "kept", "sb", writeBytes([]byte("x")))
	require.NoError(t, err)
	old := time.Now().Add(-2 * orphanAge)
	for _, n := range []string{".tmp-a-2.json", "orphan@0123.tar", "young@4567.tar"} {
		path := filepath.Join(s.Dir(), n)
		require.NoError(t, os.WriteFile(path, []byte("left"), 0o600))
		if n != "young@4567.tar" {
			require.NoError(t, os.Chtimes(path, old, old))
		}
	}
	require.NoError(t, os.MkdirAll(filepath.Join(s.Dir(), ".tmp-a-1", "sub"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), ".tmp-a-1", "rootfs.tar"), []byte("partial"), 0o600))
	// A snapshot being written by a live writer (its directory is locked).
	require.NoError(t, os.Mkdir(filepath.Join(s.Dir(), ".tmp-live-3"), 0o700))
	live, err := os.Open(filepath.Join(s.Dir(), ".tmp-live-3"))
	require.NoError(t, err)
	defer live.Close()
	require.NoError(t, unix.Flock(int(live.Fd()), unix.LOCK_EX|unix.LOCK_NB))

	removed, err := s.Clean()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{".tmp-a-1", ".tmp-a-2.json", "orphan@0123.tar"}, removed)
	assert.ElementsMatch(t, []string{"kept.json", kept.File, ".tmp-live-3", "young@4567.tar"}, files(t, s),
		"a live write and a tar renamed moments ago are kept")
}

func TestConcurrentCreatesUnderOneNameKeepOneVersion(t *testing.T) {
	s := newStore(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Create(context.Background(), "same", fmt.Sprint(i), writeBytes([]byte(fmt.Sprint("content ", i))))
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	info, err := s.Stat("same")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"same.json", info.File}, files(t, s))
	assert.Equal(t, "content "+info.SourceSandbox, string(readSnapshot(t, s, "same")))
}

func TestNewNeedsAnAbsoluteDir(t *testing.T) {
	_, err := New(Config{Dir: "relative/snaps"})
	assert.Error(t, err)
}
