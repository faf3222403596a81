// Package snapshots keeps named filesystem snapshots in one directory. A
// snapshot is an immutable tar plus a JSON sidecar that names it, so taking
// a snapshot under an existing name replaces it with one atomic rename.
//
// Concurrency: a Store is safe for concurrent use, and other processes (a
// `sandpool snapshots` command) may use the same directory: every change is
// a rename, readers hold the tar open, and a tar being written is locked.
package snapshots

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/pool/internal/durable"
)

// Sentinel errors checked with errors.Is.
var (
	// ErrInvalidName means a name does not match NamePattern.
	ErrInvalidName = errors.New("invalid snapshot name")
	// ErrNotFound means no snapshot has that name.
	ErrNotFound = errors.New("snapshot not found")
	// ErrCorrupt means a snapshot cannot be used; the error is a
	// *CorruptError.
	ErrCorrupt = errors.New("snapshot is corrupt")
)

// CorruptError says which snapshot cannot be used and why. It matches
// ErrCorrupt.
type CorruptError struct {
	Name   string
	Reason string
}

func (e *CorruptError) Error() string { return ErrCorrupt.Error() + ": " + e.Name + ": " + e.Reason }

func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// NamePattern is what a snapshot name must match: it is also a file name,
// so it can never be "..", contain "/" or NUL, or start with a dot.
var NamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// File names in the directory: "<name>.json" is the sidecar, the tar it
// names is "<name>@<version>.tar" ('@' is never part of a name), and
// anything being written starts with tmpPrefix (names never start with '.').
const (
	sidecarExt = ".json"
	tarExt     = ".tar"
	versionSep = "@"
	tmpPrefix  = ".tmp-"
)

// ValidateName checks name against NamePattern before anything touches the
// disk.
func ValidateName(name string) error {
	if !NamePattern.MatchString(name) {
		shown := name
		if len(shown) > 64 {
			shown = shown[:64] + "..."
		}
		return fmt.Errorf("%w %q: use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrInvalidName, shown)
	}
	return nil
}

// Info is a snapshot's metadata, as its sidecar stores it.
type Info struct {
	Name string `json:"name"`
	// File is the tar's name in the directory. Every version of a snapshot
	// has its own, so it also identifies the version.
	File          string    `json:"file"`
	Size          int64     `json:"size"`
	SHA256        string    `json:"sha256"`
	Created       time.Time `json:"created"`
	SourceSandbox string    `json:"source_sandbox"`
	// RunscVersion is the runsc pin that wrote the tar.
	RunscVersion string `json:"runsc_version"`
}

// Config configures a Store.
type Config struct {
	// Dir is the snapshot directory; it is created if missing.
	Dir string
	// RunscVersion is recorded in every new snapshot's metadata.
	RunscVersion string
}

// Store is a snapshot directory.
type Store struct {
	cfg Config
	// commit serialises this process's renames, so two snapshots taken
	// under one name at once never delete each other's tar.
	commit sync.Mutex
}

// New opens (and creates) the directory.
func New(cfg Config) (*Store, error) {
	if !filepath.IsAbs(cfg.Dir) {
		return nil, fmt.Errorf("snapshots: directory %q must be an absolute path", cfg.Dir)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	return &Store{cfg: cfg}, nil
}

// Dir is the snapshot directory.
func (s *Store) Dir() string { return s.cfg.Dir }

// WriteFunc writes a snapshot's tar into dest, a file it creates. It must
// only append (runsc does): the file is hashed while it grows. When Create's
// context ends, Create waits for it to return.
type WriteFunc func(ctx context.Context, dest string) error

// Create takes a snapshot under name: write fills a new file in a
// temporary directory next to the snapshots, which is hashed as it grows,
// fsynced, then renamed into place with its sidecar. A snapshot already
// under that name is replaced atomically; sandboxes being created from it
// keep the old tar open. On failure or cancellation the old version stays
// and nothing new is left.
func (s *Store) Create(ctx context.Context, name, source string, write WriteFunc) (_ Info, err error) {
	if err := ValidateName(name); err != nil {
		return Info{}, err
	}
	tmpDir, err := os.MkdirTemp(s.cfg.Dir, tmpPrefix+name+"-*")
	if err != nil {
		return Info{}, fmt.Errorf("snapshot %s: %w", name, err)
	}
	defer func() { err = errors.Join(err, os.RemoveAll(tmpDir)) }()
	// The lock tells Clean (in this or another process) that the directory
	// is in use.
	lock, err := os.Open(tmpDir)
	if err != nil {
		return Info{}, fmt.Errorf("snapshot %s: %w", name, err)
	}
	defer lock.Close()
	if err := durable.Flock(lock, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return Info{}, fmt.Errorf("snapshot %s: lock: %w", name, err)
	}

	// The file must not exist yet: runsc opens it with O_TRUNC, and ext4
	// flushes a truncated file on close, which made runsc's write of 200 MiB
	// take about 150 ms instead of 95 ms here.
	tar := filepath.Join(tmpDir, "rootfs.tar")
	sum, size, err := writeHashAndSync(ctx, tar, write)
	if err == nil {
		err = os.Chmod(tar, 0o600) // runsc creates it 0644
	}
	if err != nil {
		return Info{}, fmt.Errorf("snapshot %s: %w", name, err)
	}
	info := Info{
		Name:          name,
		File:          name + versionSep + durable.RandomHex(8) + tarExt,
		Size:          size,
		SHA256:        sum,
		Created:       time.Now().UTC(),
		SourceSandbox: source,
		RunscVersion:  s.cfg.RunscVersion,
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("snapshot %s: %w", name, err)
	}
	if err := s.commitVersion(tar, info); err != nil {
		return Info{}, fmt.Errorf("snapshot %s: %w", name, err)
	}
	return info, nil
}

// commitVersion renames the tar into place, then the sidecar (the commit
// point), then drops the version it replaced.
func (s *Store) commitVersion(tmpTar string, info Info) error {
	s.commit.Lock()
	defer s.commit.Unlock()
	old, oldErr := s.Stat(info.Name)
	tarPath := filepath.Join(s.cfg.Dir, info.File)
	if err := os.Rename(tmpTar, tarPath); err != nil {
		return err
	}
	if renamed, err := s.writeSidecar(info); err != nil {
		// Once the sidecar names the new tar (only the directory's fsync
		// failed), the tar must stay.
		if !renamed {
			err = errors.Join(err, os.Remove(tarPath))
		}
		return err
	}
	if oldErr == nil && old.File != info.File {
		// Readers that opened the old tar keep it until they close it.
		return durable.IgnoreNotExist(os.Remove(filepath.Join(s.cfg.Dir, old.File)))
	}
	return nil
}

// writeSidecar replaces info's sidecar atomically and syncs the directory,
// which also makes the tar's rename durable.
func (s *Store) writeSidecar(info Info) (renamed bool, err error) {
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return false, err
	}
	return durable.WriteFile(s.sidecarPath(info.Name), append(data, '\n'), tmpPrefix+info.Name+"-*"+sidecarExt)
}

// followInterval is how often a growing tar is read while it is written.
const followInterval = 5 * time.Millisecond

// writeHashAndSync runs write to create path, hashes the file while it
// grows (on another core, when there is one) instead of reading it all
// again afterwards, and makes it durable; the fsync overlaps with hashing
// the tail.
func writeHashAndSync(ctx context.Context, path string, write WriteFunc) (string, int64, error) {
	done := make(chan error, 1)
	go func() { done <- write(ctx, path) }()
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	h := sha256.New()
	var hashed int64
	follow := func() error {
		if f == nil {
			var err error
			if f, err = os.Open(path); errors.Is(err, fs.ErrNotExist) {
				return nil // not created yet
			} else if err != nil {
				return err
			}
		}
		n, err := io.Copy(h, f)
		hashed += n
		return err
	}
	tick := time.NewTicker(followInterval)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err == nil {
				err = follow()
			}
			if err == nil && f == nil {
				err = errors.New("the writer created no file")
			}
			if err != nil {
				return "", 0, err
			}
			synced := make(chan error, 1)
			go func() { synced <- f.Sync() }()
			sum, n, err := finishHash(f, h, hashed)
			if syncErr := <-synced; err == nil && syncErr != nil {
				err = fmt.Errorf("fsync: %w", syncErr)
			}
			return sum, n, err
		case <-tick.C:
			if err := follow(); err != nil {
				<-done
				return "", 0, err
			}
		case <-ctx.Done():
			// Stop hashing at once (it competes with whatever the caller
			// does next for CPU), then wait for the writer, which shares
			// ctx.
			<-done
			return "", 0, ctx.Err()
		}
	}
}

// finishHash hashes what was written after the last follow.
func finishHash(f *os.File, h hash.Hash, hashed int64) (string, int64, error) {
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	hashed += n
	st, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	if st.Size() != hashed {
		// The writer truncated what was hashed: hash again.
		return rehash(f)
	}
	return hex.EncodeToString(h.Sum(nil)), hashed, nil
}

func rehash(f *os.File) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Stat returns a snapshot's metadata.
func (s *Store) Stat(name string) (Info, error) {
	if err := ValidateName(name); err != nil {
		return Info{}, err
	}
	data, err := os.ReadFile(s.sidecarPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(data, &info); err != nil {
		return Info{}, &CorruptError{Name: name, Reason: "metadata: " + err.Error()}
	}
	if info.Name != name || info.File != filepath.Base(info.File) || !strings.HasPrefix(info.File, name+versionSep) {
		return Info{}, &CorruptError{Name: name, Reason: fmt.Sprintf("metadata names the wrong file %q", info.File)}
	}
	return info, nil
}

// Snapshot is an open snapshot: its tar stays readable, whatever happens to
// the name, until Close.
type Snapshot struct {
	Info Info
	file *os.File
}

// Open opens the current version of name.
func (s *Store) Open(name string) (*Snapshot, error) {
	// A replace between reading the sidecar and opening its tar removes
	// that tar; the sidecar then names the new one.
	for attempt := 0; ; attempt++ {
		info, err := s.Stat(name)
		if err != nil {
			return nil, err
		}
		f, err := os.Open(filepath.Join(s.cfg.Dir, info.File))
		if errors.Is(err, fs.ErrNotExist) && attempt < 3 {
			continue
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &CorruptError{Name: name, Reason: "its tar " + info.File + " is missing"}
		}
		if err != nil {
			return nil, err
		}
		st, err := f.Stat()
		if err == nil && st.Size() != info.Size {
			err = &CorruptError{Name: name, Reason: fmt.Sprintf("the tar has %d bytes, its metadata says %d", st.Size(), info.Size)}
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		return &Snapshot{Info: info, file: f}, nil
	}
}

// Path names the open tar for another process on this host (runsc): it
// reaches this exact version even if the name was replaced meanwhile.
func (sn *Snapshot) Path() string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), sn.file.Fd())
}

// Close releases the tar.
func (sn *Snapshot) Close() error { return sn.file.Close() }

// List returns every snapshot sorted by name. Entries whose metadata cannot
// be read are reported in the error; the others are still returned.
func (s *Store) List() ([]Info, error) {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	var infos []Info
	var errs []error
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), sidecarExt)
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		info, err := s.Stat(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		infos = append(infos, info)
	}
	slices.SortFunc(infos, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return infos, errors.Join(errs...)
}

// Remove deletes a snapshot. Sandboxes being created from it are not
// affected.
func (s *Store) Remove(name string) error {
	s.commit.Lock()
	defer s.commit.Unlock()
	info, err := s.Stat(name)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return err
	}
	if err := os.Remove(s.sidecarPath(name)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		return err
	}
	var rmErr error
	if info.File != "" {
		rmErr = durable.IgnoreNotExist(os.Remove(filepath.Join(s.cfg.Dir, info.File)))
	}
	return errors.Join(rmErr, durable.SyncDir(s.cfg.Dir))
}

// Clean removes what interrupted snapshots left: temporary files and tars
// no sidecar names, unless a live writer still holds their lock. It
// returns the names of the removed files.
func (s *Store) Clean() ([]string, error) {
	s.commit.Lock()
	defer s.commit.Unlock()
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	named := map[string]bool{}
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), sidecarExt); ok && !strings.HasPrefix(name, ".") {
			if info, err := s.Stat(name); err == nil {
				named[info.File] = true
			}
		}
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		n := e.Name()
		orphan := strings.HasSuffix(n, tarExt) && strings.Contains(n, versionSep) && !named[n]
		if orphan {
			// A writer renames its tar, then its sidecar, moments later:
			// only an old orphan is one whose writer died.
			if info, err := e.Info(); err != nil || time.Since(info.ModTime()) < orphanAge {
				continue
			}
		}
		if !(orphan || strings.HasPrefix(n, tmpPrefix)) || !(e.Type().IsRegular() || e.IsDir()) {
			continue
		}
		ok, err := durable.RemoveUnlocked(filepath.Join(s.cfg.Dir, n))
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			removed = append(removed, n)
		}
	}
	return removed, errors.Join(errs...)
}

// orphanAge is how old a tar no sidecar names must be before Clean takes
// it for a leftover.
const orphanAge = time.Minute

func (s *Store) sidecarPath(name string) string {
	return filepath.Join(s.cfg.Dir, name+sidecarExt)
}
