// Package durable holds the file operations the snapshot and checkpoint
// stores share: fsyncs that make renames survive a crash, atomic file
// replacement, and flock-based locks that other processes respect.
package durable

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// SyncDir makes renames in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFile replaces path with data atomically: it writes a temporary file
// next to path, named by tempPattern as os.CreateTemp names it, fsyncs it,
// renames it over path and fsyncs the directory. renamed reports whether
// path now holds data, which it may even when the error says the directory
// could not be synced; on any earlier failure the temporary file is
// removed.
func WriteFile(path string, data []byte, tempPattern string) (renamed bool, err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tempPattern)
	if err != nil {
		return false, err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return false, errors.Join(err, IgnoreNotExist(os.Remove(f.Name())))
	}
	return true, SyncDir(dir)
}

// IgnoreNotExist returns err, or nil if it says a file does not exist.
func IgnoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// RandomHex returns n random bytes as 2n hex digits, for file names no
// other writer picks.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Flock is unix.Flock on f, retried when a signal interrupts it.
func Flock(f *os.File, how int) error {
	for {
		if err := unix.Flock(int(f.Fd()), how); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// RemoveUnlocked removes path (a file or a directory, with what it holds)
// unless another open file holds its lock: a writer still at work, or
// another process removing it. It reports whether it removed path; a path
// that is already gone is not an error.
func RemoveUnlocked(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := Flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return false, nil
	}
	return true, os.RemoveAll(path)
}
