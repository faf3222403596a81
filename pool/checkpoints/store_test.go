package checkpoints

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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

// testSpec has characters JSON encoders like to escape: the spec must come
// back as it was.
const testSpec = `{"ociVersion": "1.0.2", "process": {"args": ["sh", "-c", "a && b < c"]}}`

// imageFiles is what a fake runsc checkpoint writes: 5+10+4 bytes.
var imageFiles = map[string]string{"checkpoint.img": "state", "pages.img": "0123456789", "sub/pages_meta.img": "meta"}

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(Config{Dir: filepath.Join(t.TempDir(), "checkpoints"), RunscVersion: "v-test"})
	require.NoError(t, err)
	return s
}

func testID(n int) string { return fmt.Sprintf("%032x", n) }

func newMeta(id string) Meta {
	return Meta{ID: id, TokenHash: HashToken("token-" + id), IdleTimeout: 300, EnableHandoff: true, Snapshot: "base"}
}

// writeImage fills the image directory the way runsc does (files 0644, a
// subdirectory 0755) and returns the spec.
func writeImage(files map[string]string) func(context.Context, string) ([]byte, error) {
	return func(_ context.Context, dir string) ([]byte, error) {
		for name, content := range files {
			path := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				return nil, err
			}
		}
		return []byte(testSpec), nil
	}
}

func save(t *testing.T, s *Store, id string, files map[string]string) Meta {
	t.Helper()
	m, err := s.Save(t.Context(), newMeta(id), writeImage(files))
	require.NoError(t, err)
	return m
}

// names lists a directory's entries.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var ns []string
	for _, e := range entries {
		ns = append(ns, e.Name())
	}
	return ns
}

// readImage reads every file of m's image, by path inside it.
func readImage(t *testing.T, s *Store, m Meta) map[string]string {
	t.Helper()
	files := map[string]string{}
	root := s.ImageDir(m)
	require.NoError(t, filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		rel, _ := filepath.Rel(root, path)
		files[rel] = string(data)
		return err
	}))
	return files
}

func lockDir(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open(dir)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	require.NoError(t, unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB))
}

func TestValidID(t *testing.T) {
	for _, id := range []string{testID(0), testID(1), "0123456789abcdef0123456789abcdef"} {
		assert.NoError(t, ValidID(id), id)
	}
	for _, id := range []string{
		"", "abc", "ABC", "../x", "..", strings.ToUpper("0123456789abcdef0123456789abcdef"),
		testID(1)[:31], testID(1) + "0", "0123456789abcdef0123456789abcdeg", "../" + testID(1)[3:],
		testID(1)[:31] + "/", strings.Repeat("a", 200),
	} {
		assert.ErrorIs(t, ValidID(id), ErrInvalidID, "%q", id)
	}
}

func TestTokenMatches(t *testing.T) {
	assert.Equal(t, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", HashToken("abc"))
	tests := []struct {
		name   string
		stored string
		token  string
		want   bool
	}{
		{"right token", HashToken("secret"), "secret", true},
		{"wrong token", HashToken("secret"), "Secret", false},
		{"empty token", HashToken("secret"), "", false},
		{"empty token even if its hash is stored", HashToken(""), "", false},
		{"nothing stored", "", "secret", false},
		{"the hash itself is not the token", HashToken("secret"), HashToken("secret"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Meta{TokenHash: tt.stored}.TokenMatches(tt.token))
		})
	}
}

func TestSaveAndLoad(t *testing.T) {
	s := newStore(t)
	id := testID(1)
	before := time.Now()
	m, err := s.Save(t.Context(), newMeta(id), writeImage(imageFiles))
	require.NoError(t, err)

	assert.Equal(t, id, m.ID)
	assert.True(t, m.TokenMatches("token-"+id))
	assert.Equal(t, 300.0, m.IdleTimeout)
	assert.True(t, m.EnableHandoff)
	assert.Equal(t, "base", m.Snapshot)
	assert.Equal(t, "v-test", m.RunscVersion)
	assert.Equal(t, "v-test", s.RunscVersion())
	assert.JSONEq(t, testSpec, string(m.Spec))
	assert.Contains(t, string(m.Spec), "a && b < c", "the spec is not escaped")
	assert.Equal(t, int64(19), m.ImageBytes)
	assert.WithinRange(t, m.Checkpointed, before.Add(-time.Second), time.Now().Add(time.Second))
	assert.Equal(t, m.Checkpointed, m.Created, "a first checkpoint creates the sandbox now")
	assert.True(t, m.LastAttached.IsZero())
	assert.True(t, strings.HasPrefix(m.Image, "image-"), m.Image)
	assert.Equal(t, filepath.Join(s.Dir(), id, m.Image), s.ImageDir(m))
	assert.Equal(t, imageFiles, readImage(t, s, m))
	assert.ElementsMatch(t, []string{"meta.json", m.Image}, names(t, filepath.Join(s.Dir(), id)))

	loaded, err := s.Load(id)
	require.NoError(t, err)
	assert.Equal(t, m, loaded)

	var raw map[string]any
	data, err := os.ReadFile(filepath.Join(s.Dir(), id, "meta.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &raw))
	for _, key := range []string{
		"id", "token_hash", "idle_timeout", "enable_sandbox_handoff", "enable_idle_timeout_auto_checkpoint",
		"filesystem_snapshot_name", "spec", "runsc_version", "image", "image_bytes", "created", "checkpointed", "last_attached",
	} {
		assert.Contains(t, raw, key)
	}
	assert.NotContains(t, string(data), "token-"+id, "only the token's hash is stored")
}

func TestFilesArePrivate(t *testing.T) {
	s := newStore(t)
	id := testID(1)
	m := save(t, s, id, imageFiles)
	img := s.ImageDir(m)
	for path, want := range map[string]os.FileMode{
		s.Dir():                                  0o700,
		filepath.Join(s.Dir(), id):               0o700,
		filepath.Join(s.Dir(), id, "meta.json"):  0o600,
		img:                                      0o700,
		filepath.Join(img, "sub"):                0o700,
		filepath.Join(img, "pages.img"):          0o600,
		filepath.Join(img, "sub/pages_meta.img"): 0o600,
	} {
		st, err := os.Stat(path)
		require.NoError(t, err)
		assert.Equal(t, want, st.Mode().Perm(), path)
	}
	require.NoError(t, s.Touch(id, time.Now()))
	st, err := os.Stat(filepath.Join(s.Dir(), id, "meta.json"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "after Touch")
}

func TestSecondSaveReplacesTheImage(t *testing.T) {
	s := newStore(t)
	id := testID(1)
	first := save(t, s, id, map[string]string{"a.img": "one"})
	attached := time.Now().Add(time.Minute)
	require.NoError(t, s.Touch(id, attached))

	meta := newMeta(id)
	meta.Created = time.Now().Add(time.Hour)
	meta.IdleTimeout = 0
	second, err := s.Save(t.Context(), meta, writeImage(map[string]string{"b.img": "two!"}))
	require.NoError(t, err)

	assert.NotEqual(t, first.Image, second.Image)
	assert.Equal(t, first.Created, second.Created, "the sandbox's creation is kept")
	assert.True(t, attached.Equal(second.LastAttached), "the last attach is kept")
	assert.Zero(t, second.IdleTimeout, "settings come from the new meta")
	assert.Equal(t, int64(4), second.ImageBytes)
	assert.NoDirExists(t, s.ImageDir(first))
	assert.ElementsMatch(t, []string{"meta.json", second.Image}, names(t, filepath.Join(s.Dir(), id)), "only one image is left")
	assert.Equal(t, map[string]string{"b.img": "two!"}, readImage(t, s, second))
	loaded, err := s.Load(id)
	require.NoError(t, err)
	assert.Equal(t, second, loaded)
}

func TestSaveReplacesCorruptMetadata(t *testing.T) {
	s := newStore(t)
	id := testID(1)
	dir := filepath.Join(s.Dir(), id)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "image-1-old"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "meta.json"), []byte("{"), 0o600))

	m := save(t, s, id, imageFiles)
	loaded, err := s.Load(id)
	require.NoError(t, err)
	assert.Equal(t, m, loaded)
	assert.ElementsMatch(t, []string{"meta.json", m.Image}, names(t, dir))
}

func TestFailedSaveKeepsThePreviousCheckpoint(t *testing.T) {
	boom := errors.New("runsc checkpoint failed")
	partial := func(ctx context.Context, dir string) error {
		_, err := writeImage(map[string]string{"pages.img": "partial"})(ctx, dir)
		return err
	}
	cancelSoon := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		return ctx, cancel
	}
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		write   func(context.Context, string) ([]byte, error)
		want    error
		wantMsg string
	}{
		{
			name: "write fails half-way",
			write: func(ctx context.Context, dir string) ([]byte, error) {
				return nil, errors.Join(partial(ctx, dir), boom)
			},
			want: boom,
		},
		{
			name: "cancelled while writing",
			ctx:  cancelSoon,
			write: func(ctx context.Context, dir string) ([]byte, error) {
				_ = partial(ctx, dir)
				<-ctx.Done()
				return nil, ctx.Err()
			},
			want: context.Canceled,
		},
		{
			name: "a writer that ignores the cancellation",
			ctx:  cancelSoon,
			write: func(ctx context.Context, dir string) ([]byte, error) {
				_ = partial(ctx, dir)
				<-ctx.Done()
				return []byte(testSpec), nil
			},
			want: context.Canceled,
		},
		{
			name: "a writer that fails its own way on cancellation",
			ctx:  cancelSoon,
			write: func(ctx context.Context, dir string) ([]byte, error) {
				_ = partial(ctx, dir)
				<-ctx.Done()
				return nil, boom
			},
			want: context.Canceled,
		},
		{
			name: "deadline",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 20*time.Millisecond)
			},
			write: func(ctx context.Context, dir string) ([]byte, error) {
				_ = partial(ctx, dir)
				<-ctx.Done()
				return nil, ctx.Err()
			},
			want: context.DeadlineExceeded,
		},
		{
			name: "cancelled before the save",
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			},
			write: writeImage(imageFiles),
			want:  context.Canceled,
		},
		{
			name: "the spec is not JSON",
			write: func(ctx context.Context, dir string) ([]byte, error) {
				return []byte("{not json"), partial(ctx, dir)
			},
			wantMsg: "spec",
		},
		{
			name: "no spec",
			write: func(ctx context.Context, dir string) ([]byte, error) {
				return nil, partial(ctx, dir)
			},
			wantMsg: "spec",
		},
		{
			name: "the spec is not an object",
			write: func(ctx context.Context, dir string) ([]byte, error) {
				return []byte(`["a"]`), partial(ctx, dir)
			},
			wantMsg: "spec",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			id := testID(7)
			v1 := save(t, s, id, imageFiles)
			ctx, cancel := context.WithCancel(context.Background())
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()

			_, err := s.Save(ctx, newMeta(id), tt.write)
			require.Error(t, err)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
			}
			assert.ErrorContains(t, err, tt.wantMsg)

			loaded, err := s.Load(id)
			require.NoError(t, err)
			assert.Equal(t, v1, loaded)
			assert.Equal(t, imageFiles, readImage(t, s, v1))
			assert.ElementsMatch(t, []string{"meta.json", v1.Image}, names(t, filepath.Join(s.Dir(), id)), "no temporary image is left")
		})
	}
}

func TestFailedFirstSaveLeavesNothing(t *testing.T) {
	s := newStore(t)
	_, err := s.Save(t.Context(), newMeta(testID(1)), func(ctx context.Context, dir string) ([]byte, error) {
		_, err := writeImage(imageFiles)(ctx, dir)
		return nil, errors.Join(err, errors.New("boom"))
	})
	require.Error(t, err)
	assert.Empty(t, names(t, s.Dir()))
	_, err = s.Load(testID(1))
	assert.ErrorIs(t, err, ErrNotFound)
}

func TestSaveRejectsBadMetaBeforeWriting(t *testing.T) {
	tests := []struct {
		name string
		meta Meta
		want error
	}{
		{"path traversal", Meta{ID: "../x", TokenHash: HashToken("t")}, ErrInvalidID},
		{"no id", Meta{TokenHash: HashToken("t")}, ErrInvalidID},
		{"no token hash", Meta{ID: testID(1)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			called := false
			_, err := s.Save(t.Context(), tt.meta, func(context.Context, string) ([]byte, error) {
				called = true
				return []byte(testSpec), nil
			})
			require.Error(t, err)
			if tt.want != nil {
				assert.ErrorIs(t, err, tt.want)
			}
			assert.False(t, called)
			assert.Empty(t, names(t, s.Dir()))
		})
	}
}

func TestLoadErrors(t *testing.T) {
	s := newStore(t)
	good := save(t, s, testID(1), imageFiles)
	goodJSON, err := os.ReadFile(filepath.Join(s.Dir(), good.ID, "meta.json"))
	require.NoError(t, err)

	tests := []struct {
		name string
		id   string
		// With mkdir, the sandbox directory is made with an image named
		// like good's, and meta.json holds raw or, with edit, good's
		// metadata (with this id) changed by edit.
		mkdir   bool
		raw     string
		edit    func(m map[string]any)
		want    error
		wantMsg string
	}{
		{name: "path traversal", id: "../x", want: ErrInvalidID},
		{name: "upper case", id: "ABC", want: ErrInvalidID},
		{name: "too short", id: "abc123", want: ErrInvalidID},
		{name: "32 upper case hex", id: strings.ToUpper(testID(0xabcdef)), want: ErrInvalidID},
		{name: "not found", id: testID(2), want: ErrNotFound},
		{name: "no meta.json", id: testID(3), mkdir: true, want: ErrNotFound},
		{name: "corrupt JSON", id: testID(4), mkdir: true, raw: `{"id": `, want: ErrCorrupt, wantMsg: "meta.json"},
		{name: "id mismatch", id: testID(5), mkdir: true, edit: func(m map[string]any) { m["id"] = good.ID }, want: ErrCorrupt, wantMsg: "for sandbox"},
		{name: "no spec", id: testID(6), mkdir: true, edit: func(m map[string]any) { delete(m, "spec") }, want: ErrCorrupt, wantMsg: "spec"},
		{name: "null spec", id: testID(7), mkdir: true, edit: func(m map[string]any) { m["spec"] = nil }, want: ErrCorrupt, wantMsg: "spec"},
		{name: "no token hash", id: testID(8), mkdir: true, edit: func(m map[string]any) { delete(m, "token_hash") }, want: ErrCorrupt, wantMsg: "token hash"},
		{name: "no image", id: testID(9), mkdir: true, edit: func(m map[string]any) { delete(m, "image") }, want: ErrCorrupt, wantMsg: "image"},
		{name: "image outside", id: testID(10), mkdir: true, edit: func(m map[string]any) { m["image"] = "image-x/../../" + good.ID + "/" + good.Image }, want: ErrCorrupt, wantMsg: "image"},
		{name: "image missing", id: testID(11), mkdir: true, edit: func(m map[string]any) { m["image"] = "image-404" }, want: ErrCorrupt, wantMsg: "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.mkdir {
				dir := filepath.Join(s.Dir(), tt.id)
				require.NoError(t, os.MkdirAll(filepath.Join(dir, good.Image), 0o700))
				data := []byte(tt.raw)
				if tt.edit != nil {
					var m map[string]any
					require.NoError(t, json.Unmarshal(goodJSON, &m))
					m["id"] = tt.id
					tt.edit(m)
					var err error
					data, err = json.Marshal(m)
					require.NoError(t, err)
				}
				if len(data) > 0 {
					require.NoError(t, os.WriteFile(filepath.Join(dir, "meta.json"), data, 0o600))
				}
			}
			_, err := s.Load(tt.id)
			assert.ErrorIs(t, err, tt.want)
			assert.ErrorContains(t, err, tt.wantMsg)
		})
	}

}

func TestTouch(t *testing.T) {
	s := newStore(t)
	id := testID(1)
	m := save(t, s, id, imageFiles)
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("CET", 3600))
	require.NoError(t, s.Touch(id, at))

	loaded, err := s.Load(id)
	require.NoError(t, err)
	assert.True(t, at.Equal(loaded.LastAttached))
	m.LastAttached = loaded.LastAttached
	assert.Equal(t, m, loaded, "nothing else changes")
	assert.ElementsMatch(t, []string{"meta.json", m.Image}, names(t, filepath.Join(s.Dir(), id)), "no temporary file is left")

	assert.ErrorIs(t, s.Touch(testID(2), at), ErrNotFound)
	assert.ErrorIs(t, s.Touch("../"+id, at), ErrInvalidID)
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), id, "meta.json"), []byte("nope"), 0o600))
	assert.ErrorIs(t, s.Touch(id, at), ErrCorrupt)
}

func TestRemove(t *testing.T) {
	s := newStore(t)
	gone, kept := testID(1), testID(2)
	save(t, s, gone, imageFiles)
	save(t, s, kept, imageFiles)

	require.NoError(t, s.Remove(gone))
	_, err := s.Load(gone)
	assert.ErrorIs(t, err, ErrNotFound)
	assert.Equal(t, []string{kept}, names(t, s.Dir()), "nothing is left of it")
	require.NoError(t, s.Remove(gone), "removing twice is fine")
	require.NoError(t, s.Remove(testID(3)), "so is removing an unknown id")
	assert.ErrorIs(t, s.Remove("../"+kept), ErrInvalidID)
	_, err = s.Load(kept)
	assert.NoError(t, err)

	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), kept, "meta.json"), []byte("{"), 0o600))
	require.NoError(t, s.Remove(kept), "a corrupt checkpoint can be removed")
	assert.Empty(t, names(t, s.Dir()))
}

func TestExpire(t *testing.T) {
	s := newStore(t)
	stale, attached, live, busy := testID(1), testID(2), testID(3), testID(6)
	oldCorrupt, newCorrupt := testID(4), testID(5)
	for _, id := range []string{stale, attached, live, busy} {
		save(t, s, id, imageFiles)
	}
	now := time.Now()
	require.NoError(t, s.Touch(attached, now.Add(2*time.Hour)))
	for id, mtime := range map[string]time.Time{oldCorrupt: now.Add(-time.Hour), newCorrupt: now.Add(2 * time.Hour)} {
		dir := filepath.Join(s.Dir(), id)
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "image-1-x"), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "meta.json"), []byte("{"), 0o600))
		require.NoError(t, os.Chtimes(dir, mtime, mtime))
	}
	// A save in progress holds its directory.
	lockDir(t, filepath.Join(s.Dir(), busy))
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), "notes"), nil, 0o600))

	var asked []string
	removed, err := s.Expire(now.Add(time.Hour), func(id string) bool {
		asked = append(asked, id)
		return id == live
	})
	require.NoError(t, err)
	assert.Equal(t, []string{stale, oldCorrupt}, removed)
	assert.ElementsMatch(t, []string{attached, live, newCorrupt, busy, "notes"}, names(t, s.Dir()))
	assert.ElementsMatch(t, []string{stale, attached, live, oldCorrupt, newCorrupt, busy}, asked)
	_, err = s.Load(attached)
	assert.NoError(t, err)

	removed, err = s.Expire(now.Add(-time.Hour), nil)
	require.NoError(t, err)
	assert.Empty(t, removed, "nothing that recent")
}

func TestCleanRemovesLeftoversButKeepsCheckpoints(t *testing.T) {
	s := newStore(t)
	good := save(t, s, testID(1), imageFiles)
	noMeta, empty, corrupt, live, young := testID(2), testID(3), testID(4), testID(5), testID(6)
	mkdir := func(rel string) {
		require.NoError(t, os.MkdirAll(filepath.Join(s.Dir(), rel), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), rel, "f"), []byte("x"), 0o600))
	}
	write := func(rel, content string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(s.Dir(), rel)), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), rel), []byte(content), 0o600))
	}
	// Beside a good checkpoint: an interrupted image and meta file, and an
	// image that was renamed but never committed.
	mkdir(good.ID + "/.tmp-image-123")
	write(good.ID+"/.tmp-meta-1.json", "{}")
	mkdir(good.ID + "/image-1-dead")
	// A first save that never committed, and an empty directory.
	mkdir(noMeta + "/image-5-aa")
	mkdir(noMeta + "/.tmp-image-9")
	require.NoError(t, os.Mkdir(filepath.Join(s.Dir(), empty), 0o700))
	old := time.Now().Add(-2 * newDirAge)
	for _, id := range []string{noMeta, empty} {
		require.NoError(t, os.Chtimes(filepath.Join(s.Dir(), id), old, old))
	}
	// A directory a first save has just made, and not locked yet.
	require.NoError(t, os.Mkdir(filepath.Join(s.Dir(), young), 0o700))
	// Corrupt metadata: its temporary files go, its images stay for Expire.
	write(corrupt+"/meta.json", "{")
	mkdir(corrupt + "/image-7-bb")
	write(corrupt+"/.tmp-meta-2.json", "")
	// A save in progress holds its directory.
	mkdir(live + "/.tmp-image-live")
	lockDir(t, filepath.Join(s.Dir(), live))
	// A remove cut short, and things that are not the store's.
	mkdir(".tmp-removed-" + testID(9) + "-ab/image-1-x")
	write("notes", "")
	mkdir("Not-An-ID")

	removed, err := s.Clean()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{
		good.ID + "/.tmp-image-123", good.ID + "/.tmp-meta-1.json", good.ID + "/image-1-dead",
		noMeta, empty, corrupt + "/.tmp-meta-2.json", ".tmp-removed-" + testID(9) + "-ab",
	}, removed)
	assert.ElementsMatch(t, []string{good.ID, corrupt, live, young, "notes", "Not-An-ID"}, names(t, s.Dir()))
	assert.ElementsMatch(t, []string{"meta.json", good.Image}, names(t, filepath.Join(s.Dir(), good.ID)))
	assert.ElementsMatch(t, []string{"meta.json", "image-7-bb"}, names(t, filepath.Join(s.Dir(), corrupt)))
	assert.Equal(t, []string{".tmp-image-live"}, names(t, filepath.Join(s.Dir(), live)))
	loaded, err := s.Load(good.ID)
	require.NoError(t, err)
	assert.Equal(t, good, loaded)
	assert.Equal(t, imageFiles, readImage(t, s, good))

	removed, err = s.Clean()
	require.NoError(t, err)
	assert.Empty(t, removed)
}

func TestConcurrentSavesWhileCleaning(t *testing.T) {
	s := newStore(t)
	stop := make(chan struct{})
	var cleaner sync.WaitGroup
	cleaner.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			removed, err := s.Clean()
			assert.NoError(t, err)
			assert.Empty(t, removed, "Clean removed part of a save")
		}
	})
	var savers sync.WaitGroup
	for i := range 8 {
		savers.Go(func() {
			id := testID(i)
			for n := range 5 {
				_, err := s.Save(t.Context(), newMeta(id), writeImage(map[string]string{"pages.img": fmt.Sprint(i, "-", n)}))
				assert.NoError(t, err)
			}
		})
	}
	savers.Wait()
	close(stop)
	cleaner.Wait()

	for i := range 8 {
		m, err := s.Load(testID(i))
		require.NoError(t, err)
		assert.Equal(t, map[string]string{"pages.img": fmt.Sprint(i, "-", 4)}, readImage(t, s, m))
		assert.ElementsMatch(t, []string{"meta.json", m.Image}, names(t, filepath.Join(s.Dir(), m.ID)))
	}
}

func TestNewNeedsAnAbsoluteDir(t *testing.T) {
	_, err := New(Config{Dir: "relative/checkpoints"})
	assert.Error(t, err)
}

func TestVerifyCatchesADamagedImage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"a byte changed", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "pages.img"), []byte("pageX"), 0o600))
		}},
		{"a byte appended", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "pages.img"), []byte("pages!"), 0o600))
		}},
		{"a file removed", func(t *testing.T, dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, "checkpoint.img")))
		}},
		{"a file added", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "extra"), nil, 0o600))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			m := save(t, s, testID(7), map[string]string{"checkpoint.img": "state", "pages.img": "pages"})
			require.NotEmpty(t, m.ImageSHA256)
			require.NoError(t, s.Verify(m))
			tc.damage(t, s.ImageDir(m))
			assert.ErrorIs(t, s.Verify(m), ErrCorrupt)
		})
	}
}

// A checkpoint whose image is gone still says whose it is: the caller can
// check a token before reporting the damage.
func TestLoadReturnsTheMetaOfADamagedCheckpoint(t *testing.T) {
	s := newStore(t)
	m := save(t, s, testID(7), map[string]string{"checkpoint.img": "state"})
	require.NoError(t, os.RemoveAll(s.ImageDir(m)))
	got, err := s.Load(testID(7))
	assert.ErrorIs(t, err, ErrCorrupt)
	assert.Equal(t, m.TokenHash, got.TokenHash)
}
