// Package checkpoints keeps the checkpoints of sandboxes in one directory:
// per sandbox, its metadata and the image of its latest checkpoint, which
// the next checkpoint replaces atomically.
//
// Concurrency: a Store is safe for concurrent use across ids; the caller
// serialises operations on one id (one actor per sandbox). Expire and Clean
// may run at any time: they skip the ids keep protects and every sandbox
// directory that a Save, Touch or Remove (of this or another process) holds
// locked.
package checkpoints

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/pool/internal/durable"
)

// Sentinel errors checked with errors.Is.
var (
	// ErrNotFound means a sandbox has no checkpoint.
	ErrNotFound = errors.New("checkpoint not found")
	// ErrCorrupt means a checkpoint's meta.json cannot be used; the error
	// says why.
	ErrCorrupt = errors.New("checkpoint metadata is corrupt")
	// ErrInvalidID means an id is not 32 lowercase hex characters.
	ErrInvalidID = errors.New("invalid sandbox id")
)

// Layout: <Dir>/<id>/meta.json names the image directory <Dir>/<id>/image-*
// it goes with. Anything being written starts with tmpPrefix (ids and image
// names never do): temporary images and meta files inside sandbox
// directories, and sandbox directories being removed in Dir.
const (
	metaFile    = "meta.json"
	imagePrefix = "image-"
	tmpPrefix   = ".tmp-"
	idLen       = 32
)

// ValidID checks a sandbox id before it reaches the filesystem: ids come
// from URLs, and only 32 lowercase hex characters are let through.
func ValidID(id string) error {
	if !isLowerHex(id, idLen) {
		shown := id
		if len(shown) > 64 {
			shown = shown[:64] + "..."
		}
		return fmt.Errorf("%w %q: want %d lowercase hex characters", ErrInvalidID, shown, idLen)
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// HashToken is the hex sha256 of a sandbox token: only the hash is stored.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Meta is a checkpoint's metadata, as meta.json stores it.
type Meta struct {
	ID                 string  `json:"id"`
	TokenHash          string  `json:"token_hash"`
	IdleTimeout        float64 `json:"idle_timeout"` // seconds, 0 = never
	EnableHandoff      bool    `json:"enable_sandbox_handoff"`
	IdleAutoCheckpoint bool    `json:"enable_idle_timeout_auto_checkpoint"`
	Snapshot           string  `json:"filesystem_snapshot_name,omitempty"`
	// Spec is the OCI spec (config.json) the sandbox ran with, compacted
	// but otherwise as the writer returned it.
	Spec         json.RawMessage `json:"spec"`
	RunscVersion string          `json:"runsc_version"`
	// Image is the name of the latest image directory inside the sandbox
	// directory; every checkpoint has its own.
	Image      string `json:"image"`
	ImageBytes int64  `json:"image_bytes"`
	// ImageSHA256 is the digest of the image's files (names, sizes and
	// contents): runsc restores a damaged pages file without noticing.
	ImageSHA256  string    `json:"image_sha256,omitempty"`
	Created      time.Time `json:"created"` // when the sandbox was first created
	Checkpointed time.Time `json:"checkpointed"`
	LastAttached time.Time `json:"last_attached"`
}

// TokenMatches compares token's hash with TokenHash in constant time. An
// empty token never matches.
func (m Meta) TokenMatches(token string) bool {
	if token == "" || m.TokenHash == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(HashToken(token)), []byte(m.TokenHash)) == 1
}

// Config configures a Store.
type Config struct {
	// Dir is the checkpoint directory, an absolute path; it is created
	// (0700) if missing.
	Dir string
	// RunscVersion is recorded in every checkpoint.
	RunscVersion string
}

// Store is a checkpoint directory.
type Store struct {
	cfg Config
}

// New opens (and creates) the directory.
func New(cfg Config) (*Store, error) {
	if !filepath.IsAbs(cfg.Dir) {
		return nil, fmt.Errorf("checkpoints: directory %q must be an absolute path", cfg.Dir)
	}
	cfg.Dir = filepath.Clean(cfg.Dir)
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	return &Store{cfg: cfg}, nil
}

// Dir is the checkpoint directory.
func (s *Store) Dir() string { return s.cfg.Dir }

// RunscVersion is the version recorded in new checkpoints.
func (s *Store) RunscVersion() string { return s.cfg.RunscVersion }

// ImageDir is the absolute path of m's image; m comes from Load or Save,
// which check that its image stays inside the sandbox's directory.
func (s *Store) ImageDir(m Meta) string {
	return filepath.Join(s.sandboxDir(m.ID), m.Image)
}

// Save takes a checkpoint of sandbox meta.ID. write fills a fresh, empty
// temporary image directory inside the sandbox's directory and returns the
// sandbox's spec; the image is then made durable and private (files 0600,
// directories 0700) and renamed to a name of its own, and meta.json is
// replaced atomically (the commit point) before the previous image is
// removed.
//
// The committed Meta has Spec, Image, ImageBytes (the size of the image's
// files), Checkpointed (now) and RunscVersion filled in; Created comes from
// the previous checkpoint if there is one, else from meta or now, and a
// zero LastAttached is kept from the previous checkpoint.
//
// On failure (write fails, ctx ends, even if write ignored it) the
// temporary image is removed and the previous checkpoint stays intact.
func (s *Store) Save(ctx context.Context, meta Meta, write func(ctx context.Context, imageDir string) (spec []byte, err error)) (_ Meta, err error) {
	id := meta.ID
	if err := ValidID(id); err != nil {
		return Meta{}, err
	}
	if meta.TokenHash == "" {
		// Load would call the checkpoint corrupt.
		return Meta{}, fmt.Errorf("checkpoint %s: no token hash", id)
	}
	if err := ctx.Err(); err != nil {
		return Meta{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	lock, err := s.lockSandbox(id, true)
	if err != nil {
		return Meta{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	defer lock.Close()
	dir := s.sandboxDir(id)

	prev, err := s.Load(id)
	hasPrev := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) {
		return Meta{}, err
	}
	var tmp string
	committed := false
	defer func() {
		if committed {
			return
		}
		if tmp != "" {
			err = errors.Join(err, os.RemoveAll(tmp))
		}
		if !hasPrev {
			// A failed first checkpoint leaves no directory behind; this
			// fails, as it should, when the directory holds anything.
			_ = os.Remove(dir)
		}
	}()
	if tmp, err = os.MkdirTemp(dir, tmpPrefix+imagePrefix+"*"); err != nil {
		return Meta{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}

	spec, err := write(ctx, tmp)
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		// An image taken while the context ended is not committed, whatever
		// the writer made of it.
		err = errors.Join(ctxErr, err)
	}
	if err == nil {
		spec, err = compactSpec(spec)
	}
	var size int64
	var digest string
	if err == nil {
		size, digest, err = syncImage(ctx, tmp)
	}
	if err != nil {
		return Meta{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}

	now := time.Now().UTC()
	m := meta
	m.Spec = spec
	m.RunscVersion = s.cfg.RunscVersion
	// The random part keeps names unique even if the clock steps back.
	m.Image = fmt.Sprintf("%s%d-%s", imagePrefix, now.UnixNano(), durable.RandomHex(4))
	m.ImageBytes = size
	m.ImageSHA256 = digest
	m.Checkpointed = now
	// UTC, without a monotonic reading: what Load returns.
	m.Created, m.LastAttached = m.Created.UTC(), m.LastAttached.UTC()
	if hasPrev {
		m.Created = prev.Created
		if m.LastAttached.IsZero() {
			m.LastAttached = prev.LastAttached
		}
	}
	if m.Created.IsZero() {
		m.Created = now
	}
	if err := ctx.Err(); err != nil {
		return Meta{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	final := filepath.Join(dir, m.Image)
	if err := os.Rename(tmp, final); err != nil {
		return Meta{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	if renamed, err := s.writeMeta(m); err != nil {
		// Once meta.json names the new image (only its directory's fsync
		// failed), neither image may go: either can be the one on disk.
		if !renamed {
			err = errors.Join(err, os.RemoveAll(final))
		}
		return Meta{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	committed = true
	// Any other image is the replaced one (or one a corrupt meta.json
	// named). Failing to remove it does not undo the checkpoint: Clean
	// removes it later.
	_ = removeImagesExcept(dir, m.Image)
	return m, nil
}

// compactSpec checks the spec is a JSON object and compacts it the way
// meta.json stores it, so that Save returns what Load will.
func compactSpec(spec []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, spec); err != nil {
		return nil, fmt.Errorf("the spec is not JSON: %w", err)
	}
	if buf.Len() == 0 || buf.Bytes()[0] != '{' {
		return nil, errors.New("the spec is not a JSON object")
	}
	return buf.Bytes(), nil
}

// syncImage makes an image durable and private (runsc creates its files
// 0644, and an image holds the sandbox's memory) in the same pass that
// takes its digest, and returns the size of its files. Symbolic links are
// neither followed nor counted.
func syncImage(ctx context.Context, root string) (int64, string, error) {
	var dirs []string
	size, digest, err := digestImage(root, func(path string, f *os.File) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if f == nil {
			dirs = append(dirs, path)
			return os.Chmod(path, 0o700)
		}
		if err := f.Chmod(0o600); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return 0, "", err
	}
	// Deepest first, so each directory records entries that are durable.
	for _, d := range slices.Backward(dirs) {
		if err := durable.SyncDir(d); err != nil {
			return 0, "", fmt.Errorf("fsync %s: %w", d, err)
		}
	}
	return size, digest, nil
}

// writeMeta replaces m's meta.json atomically. renamed reports whether the
// new file took its place, which it may have even when the error says its
// directory could not be synced.
func (s *Store) writeMeta(m Meta) (renamed bool, err error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// The spec keeps its '<', '>' and '&' as they are.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return false, err
	}
	return durable.WriteFile(filepath.Join(s.sandboxDir(m.ID), metaFile), buf.Bytes(), tmpPrefix+"meta-*.json")
}

// removeImagesExcept removes every image in dir but keep.
func removeImagesExcept(dir, keep string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, imagePrefix) && n != keep {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, n)))
		}
	}
	return errors.Join(errs...)
}

// Load reads a sandbox's metadata and checks it names an image that
// exists. It returns ErrInvalidID, ErrNotFound (no directory or no
// meta.json) or ErrCorrupt (unreadable JSON, another sandbox's id, no
// spec, image or token hash).
// For a checkpoint whose metadata is readable but whose image is missing
// or invalid, Load returns the Meta with the ErrCorrupt error, so a caller
// can check the token before saying more.
func (s *Store) Load(id string) (Meta, error) {
	if err := ValidID(id); err != nil {
		return Meta{}, err
	}
	data, err := os.ReadFile(filepath.Join(s.sandboxDir(id), metaFile))
	if isNotExist(err) {
		return Meta{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Meta{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	var m Meta
	if err := json.Unmarshal(data, &m); err != nil {
		return Meta{}, corrupt(id, "meta.json: %v", err)
	}
	switch {
	case m.ID != id:
		return Meta{}, corrupt(id, "meta.json is for sandbox %q", m.ID)
	case m.TokenHash == "":
		return Meta{}, corrupt(id, "no token hash")
	case len(m.Spec) == 0 || m.Spec[0] != '{':
		return Meta{}, corrupt(id, "no spec")
	case !strings.HasPrefix(m.Image, imagePrefix) || strings.ContainsRune(m.Image, '/'):
		// The image must stay inside the sandbox's directory.
		return m, corrupt(id, "invalid image name %q", m.Image)
	}
	st, err := os.Stat(s.ImageDir(m))
	if isNotExist(err) {
		return m, corrupt(id, "image %s is missing", m.Image)
	}
	if err != nil {
		return m, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	if !st.IsDir() {
		return m, corrupt(id, "image %s is not a directory", m.Image)
	}
	return m, nil
}

// Verify checks m's image against the digest taken when it was saved;
// a damaged or changed file gives ErrCorrupt. It reads the whole image.
func (s *Store) Verify(m Meta) error {
	if m.ImageSHA256 == "" {
		return nil // saved before images had digests
	}
	_, digest, err := digestImage(s.ImageDir(m), nil)
	if err != nil {
		return corrupt(m.ID, "image %s: %v", m.Image, err)
	}
	if digest != m.ImageSHA256 {
		return corrupt(m.ID, "image %s does not match its checksum", m.Image)
	}
	return nil
}

// digestImage hashes every regular file under root (its path, size and
// content, in WalkDir's lexical order) and adds up their sizes. visit, when
// set, sees each directory (f nil) and each open file before it is read.
func digestImage(root string, visit func(path string, f *os.File) error) (int64, string, error) {
	h := sha256.New()
	var size int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && visit != nil {
			return visit(path, nil)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if visit != nil {
			if err := visit(path, f); err != nil {
				return err
			}
		}
		fh := sha256.New()
		n, err := io.Copy(fh, f)
		if err != nil {
			return err
		}
		size += n
		fmt.Fprintf(h, "%s\x00%d\x00%x\n", rel, n, fh.Sum(nil))
		return nil
	})
	if err != nil {
		return 0, "", err
	}
	return size, hex.EncodeToString(h.Sum(nil)), nil
}

func corrupt(id, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, id, fmt.Sprintf(format, args...))
}

// Touch records an attach at at (LastAttached) atomically.
func (s *Store) Touch(id string, at time.Time) error {
	if err := ValidID(id); err != nil {
		return err
	}
	lock, err := s.lockSandbox(id, false)
	if err != nil {
		return err
	}
	defer lock.Close()
	m, err := s.Load(id)
	if err != nil {
		return err
	}
	m.LastAttached = at.UTC()
	if _, err := s.writeMeta(m); err != nil {
		return fmt.Errorf("checkpoint %s: touch: %w", id, err)
	}
	return nil
}

// Remove deletes a sandbox's metadata and images; removing an unknown id
// is not an error.
func (s *Store) Remove(id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	lock, err := s.lockSandbox(id, false)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer lock.Close()
	return s.removeLocked(id)
}

// removeLocked moves a locked sandbox directory out of the way in one
// rename, so that a crash never leaves a meta.json whose image is half
// deleted, then deletes it. The lock stays on the moved directory, which
// keeps Clean away from it.
func (s *Store) removeLocked(id string) error {
	doomed := filepath.Join(s.cfg.Dir, tmpPrefix+"removed-"+id+"-"+durable.RandomHex(4))
	if err := os.Rename(s.sandboxDir(id), doomed); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("checkpoint %s: remove: %w", id, err)
	}
	if err := durable.SyncDir(s.cfg.Dir); err != nil {
		return fmt.Errorf("checkpoint %s: remove: %w", id, err)
	}
	if err := os.RemoveAll(doomed); err != nil {
		return fmt.Errorf("checkpoint %s: remove: %w", id, err)
	}
	return nil
}

// Expire removes every sandbox whose latest of Checkpointed and
// LastAttached is before olderThan, except those keep (if not nil) reports
// true for (live sandboxes) and those a Save holds. Directories without
// usable metadata are judged by their mtime. It returns the removed ids,
// sorted.
func (s *Store) Expire(olderThan time.Time, keep func(id string) bool) ([]string, error) {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || ValidID(id) != nil || keep != nil && keep(id) {
			continue
		}
		expired, err := s.expire(id, olderThan)
		if err != nil {
			errs = append(errs, err)
		}
		if expired {
			removed = append(removed, id)
		}
	}
	return removed, errors.Join(errs...)
}

func (s *Store) expire(id string, olderThan time.Time) (bool, error) {
	lock, err := s.tryLockSandbox(id)
	if err != nil || lock == nil {
		return false, err
	}
	defer lock.Close()
	last, err := s.lastUsed(id)
	if err != nil || !last.Before(olderThan) {
		return false, err
	}
	return true, s.removeLocked(id)
}

// lastUsed is when a sandbox was last checkpointed or attached; without
// usable metadata, when its directory last changed.
func (s *Store) lastUsed(id string) (time.Time, error) {
	m, err := s.Load(id)
	if err == nil {
		if m.LastAttached.After(m.Checkpointed) {
			return m.LastAttached, nil
		}
		return m.Checkpointed, nil
	}
	if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotFound) {
		return time.Time{}, err
	}
	st, err := os.Stat(s.sandboxDir(id))
	if err != nil {
		return time.Time{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	return st.ModTime(), nil
}

// Clean removes what interrupted saves and removes left: temporary images
// and meta files inside sandbox directories, images meta.json does not
// name, sandbox directories without meta.json (with whatever they hold;
// once a minute old) and sandbox directories being removed. Directories a Save, Touch or Remove
// holds are left alone. It returns what it removed, as paths relative to
// Dir.
func (s *Store) Clean() ([]string, error) {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		n := e.Name()
		switch {
		case strings.HasPrefix(n, tmpPrefix):
			ok, err := durable.RemoveUnlocked(filepath.Join(s.cfg.Dir, n))
			if err != nil {
				errs = append(errs, err)
			} else if ok {
				removed = append(removed, n)
			}
		case e.IsDir() && ValidID(n) == nil:
			r, err := s.cleanSandbox(n)
			removed = append(removed, r...)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return removed, errors.Join(errs...)
}

// cleanSandbox cleans one sandbox directory unless it is locked.
func (s *Store) cleanSandbox(id string) ([]string, error) {
	lock, err := s.tryLockSandbox(id)
	if err != nil || lock == nil {
		return nil, err
	}
	defer lock.Close()
	dir := s.sandboxDir(id)
	m, metaErr := s.Load(id)
	if errors.Is(metaErr, ErrNotFound) {
		// A first save that never committed: nothing here can be restored.
		// Unless the directory is so young that its save may not have
		// locked it yet.
		if st, err := os.Stat(dir); err != nil || time.Since(st.ModTime()) < newDirAge {
			return nil, nil
		}
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("checkpoint %s: clean: %w", id, err)
		}
		return []string{id}, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: clean: %w", id, err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		n := e.Name()
		// An image meta.json does not name was never committed or was
		// replaced. With corrupt metadata nothing tells which image is
		// good, so Expire judges the whole directory instead.
		orphan := metaErr == nil && strings.HasPrefix(n, imagePrefix) && n != m.Image
		if !orphan && !strings.HasPrefix(n, tmpPrefix) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			errs = append(errs, fmt.Errorf("checkpoint %s: clean: %w", id, err))
			continue
		}
		removed = append(removed, id+"/"+n)
	}
	return removed, errors.Join(errs...)
}

// newDirAge is how old a sandbox directory without meta.json must be
// before Clean takes it for a leftover: Save creates the directory, then
// locks it.
const newDirAge = time.Minute

// lockSandbox opens a sandbox's directory and takes its lock, which tells
// Clean and Expire (in this or another process) to leave it alone. With
// create, a missing directory is created; without, it is ErrNotFound.
func (s *Store) lockSandbox(id string, create bool) (*os.File, error) {
	dir := s.sandboxDir(id)
	for attempt := 0; ; attempt++ {
		if create {
			err := os.Mkdir(dir, 0o700)
			if err == nil {
				err = durable.SyncDir(s.cfg.Dir)
			} else if errors.Is(err, fs.ErrExist) {
				err = nil
			}
			if err != nil {
				return nil, err
			}
		}
		f, err := os.Open(dir)
		if err == nil {
			if err = durable.Flock(f, unix.LOCK_EX); err == nil {
				if linked(f, dir) {
					return f, nil
				}
				// Clean or Remove took it away while we waited.
				err = fs.ErrNotExist
			}
			f.Close()
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("lock: %w", err)
		}
		if !create || attempt == 2 {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
	}
}

// tryLockSandbox is lockSandbox without waiting or creating: it returns
// nil (and no error) when the directory is gone or someone holds it.
func (s *Store) tryLockSandbox(id string) (*os.File, error) {
	dir := s.sandboxDir(id)
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	err = durable.Flock(f, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil && linked(f, dir) {
		return f, nil
	}
	f.Close()
	if err != nil && !errors.Is(err, unix.EWOULDBLOCK) {
		return nil, fmt.Errorf("checkpoint %s: lock: %w", id, err)
	}
	return nil, nil
}

// linked reports whether the open directory f is still at path.
func linked(f *os.File, path string) bool {
	open, err := f.Stat()
	if err != nil {
		return false
	}
	now, err := os.Stat(path)
	return err == nil && os.SameFile(open, now)
}

func (s *Store) sandboxDir(id string) string { return filepath.Join(s.cfg.Dir, id) }

// isNotExist also covers a path through a file where a directory should
// be.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR)
}
