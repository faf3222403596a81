package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/runsc"
)

const (
	// startupTimeout bounds the wait for the "listening" log line.
	startupTimeout = 30 * time.Second
	// shutdownTimeout is how long a SIGTERMed server gets before SIGKILL.
	shutdownTimeout = 15 * time.Second
	// runscTimeout bounds every runsc command the harness runs itself.
	runscTimeout = 20 * time.Second
	// maxLogTail caps the server log printed on failure.
	maxLogTail = 64 << 10
)

// server is one running sandpool process owned by one test.
type server struct {
	t         testing.TB
	cmd       *exec.Cmd
	addr      string // host:port it listens on
	stateDir  string // --state-dir, created and removed by the harness
	runscRoot string // <state-dir>/runsc, the server's runsc --root

	log  *logBuffer // everything the server wrote to stdout and stderr
	logR *os.File   // the harness's end of the server's output pipe

	exited   chan struct{} // closed once the process has been waited for
	exitErr  error         // cmd.Wait's result, valid after exited is closed
	stopOnce sync.Once
}

// startServer starts sandpool with the standard flags plus extra (for example
// "--idle-timeout", "2"), waits until it listens, and registers a cleanup
// that stops it and removes everything it may have left on the host.
func startServer(t testing.TB, extra ...string) *server {
	t.Helper()
	requirePrerequisites(t)

	// Not t.TempDir: its removal fails on a leftover mount, and the harness
	// must unmount first.
	stateDir, err := os.MkdirTemp("", "sandpool-e2e-state-")
	require.NoError(t, err)
	return startServerIn(t, stateDir, extra...)
}

// startServerIn is startServer on an existing state dir, as a restarted
// server finds it.
func startServerIn(t testing.TB, stateDir string, extra ...string) *server {
	t.Helper()
	s := &server{
		t:         t,
		stateDir:  stateDir,
		runscRoot: filepath.Join(stateDir, "runsc"),
		log:       &logBuffer{},
		exited:    make(chan struct{}),
	}
	// Cleanups run last-registered-first: the log dump is registered first
	// so that it also shows what the server said while shutting down.
	t.Cleanup(s.dumpLogOnFailure)

	args := append([]string{
		"serve",
		"--listen", "127.0.0.1:0",
		"--state-dir", stateDir,
		"--runsc", runscBinary,
		"--rootfs", rootfsDir,
		"--log-format", "json",
	}, extra...)

	// An *os.File as stdout/stderr means exec.Cmd copies nothing itself, so
	// Wait returns when the server exits even if a runsc grandchild still
	// holds the write end. The harness reads the other end until EOF.
	logR, logW, err := os.Pipe()
	require.NoError(t, err)
	s.cmd = exec.Command(serverBinary, args...)
	s.cmd.Dir = repoRoot
	// If the test binary itself dies (a timeout, a kill), the server gets
	// SIGTERM and deletes its sandboxes instead of running on orphaned.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	s.cmd.Stdout = logW
	s.cmd.Stderr = logW
	err = s.cmd.Start()
	logW.Close()
	if err != nil {
		logR.Close()
		s.removeStateDir()
		require.NoError(t, err, "start %s", serverBinary)
	}
	t.Cleanup(s.stop)

	addrCh := make(chan string, 1)
	s.logR = logR
	go s.readLog(logR, addrCh)
	go func() {
		s.exitErr = s.cmd.Wait()
		close(s.exited)
	}()

	select {
	case s.addr = <-addrCh:
	case <-s.exited:
		require.FailNow(t, "server exited before listening", "exit: %v", s.exitErr)
	case <-time.After(startupTimeout):
		require.FailNow(t, "server did not log a listening address", "waited %s", startupTimeout)
	}
	t.Logf("sandpool pid %d listening on %s, state dir %s", s.cmd.Process.Pid, s.addr, stateDir)
	return s
}

// readLog keeps draining the server's output for its whole lifetime (a full
// pipe would block the server), keeps it for diagnostics, and reports the
// address from the `"msg":"listening"` line.
func (s *server) readLog(r io.ReadCloser, addrCh chan<- string) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	reported := false
	for sc.Scan() {
		line := sc.Text()
		s.log.appendLine(line)
		if reported {
			continue
		}
		if addr := listeningAddr(line); addr != "" {
			addrCh <- addr
			reported = true
		}
	}
	// A line longer than the scanner's buffer ends the scan; keep draining
	// so the server never blocks on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

// listeningAddr extracts "addr" from a JSON log line whose message is
// "listening". zerolog's default message key is "message"; the project sets
// "msg", and both are accepted so a logging tweak does not hide the port.
func listeningAddr(line string) string {
	var rec map[string]any
	if json.Unmarshal([]byte(line), &rec) != nil {
		return ""
	}
	msg, _ := rec["msg"].(string)
	if msg == "" {
		msg, _ = rec["message"].(string)
	}
	addr, _ := rec["addr"].(string)
	if msg != "listening" {
		return ""
	}
	return addr
}

func (s *server) wsURL(path string) string   { return "ws://" + s.addr + path }
func (s *server) httpURL(path string) string { return "http://" + s.addr + path }

// terminate sends SIGTERM and waits up to timeout for the process to exit.
// It returns the exit code, or -1 with ok=false when the server did not exit.
func (s *server) terminate(timeout time.Duration) (code int, ok bool) {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return s.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return -1, false
	}
}

// stop is the cleanup: graceful stop, then a hard one, then a safety net that
// removes whatever the server left under its state dir. It runs even when
// the test failed half-way, and only ever signals the PID it started.
func (s *server) stop() {
	s.stopOnce.Do(func() {
		t := s.t
		select {
		case <-s.exited:
		default:
			if _, ok := s.terminate(shutdownTimeout); !ok {
				t.Errorf("sandpool pid %d ignored SIGTERM for %s; sending SIGKILL", s.cmd.Process.Pid, shutdownTimeout)
				_ = s.cmd.Process.Kill()
				select {
				case <-s.exited:
				case <-time.After(5 * time.Second):
					t.Errorf("sandpool pid %d still running after SIGKILL", s.cmd.Process.Pid)
				}
			}
		}
		s.deleteLeftovers()
		s.killLeftoverProcesses()
		s.removeStateDir()
	})
}

// deleteLeftovers removes, with the server's own reconciliation, every
// container, bundle and mount left under the state dir, so a failed test
// does not leak sandboxes.
func (s *server) deleteLeftovers() {
	ctx, cancel := context.WithTimeout(context.Background(), runscTimeout)
	defer cancel()
	leftovers, err := reconcile(ctx, s.stateDir)
	for _, id := range leftovers {
		s.t.Logf("cleanup: deleted leftover container %s", id)
	}
	if err != nil {
		s.t.Logf("cleanup: %v", err)
	}
}

// reconcile runs runsc.Runner.Reconcile on a state dir.
func reconcile(ctx context.Context, stateDir string) ([]string, error) {
	r, err := runsc.New(runsc.Config{Binary: runscBinary, StateDir: stateDir, Rootfs: rootfsDir})
	if err != nil {
		return nil, err
	}
	return r.Reconcile(ctx)
}

// killLeftoverProcesses SIGKILLs runsc processes the server spawned that
// outlived it. They are identified by this server's unique state dir on
// their command line, so nothing else on the machine is touched.
func (s *server) killLeftoverProcesses() {
	for _, p := range processesMentioning(s.stateDir) {
		s.t.Logf("cleanup: killing leftover process %d: %s", p.pid, p.cmdline)
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

func (s *server) removeStateDir() {
	if err := os.RemoveAll(s.stateDir); err != nil {
		s.t.Logf("cleanup: remove %s: %v", s.stateDir, err)
	}
}

func (s *server) dumpLogOnFailure() {
	if s.t.Failed() {
		s.t.Logf("sandpool output (last %d KiB):\n%s", maxLogTail>>10, s.log.tail(maxLogTail))
	}
}

// runsc runs the runsc CLI against the server's root with a deadline.
func (s *server) runsc(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), runscTimeout)
	defer cancel()
	full := append([]string{"--root", s.runscRoot}, args...)
	out, err := exec.CommandContext(ctx, runscBinary, full...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("runsc %s: %w", strings.Join(full, " "), err)
	}
	return out, nil
}

// runscList returns the container ids under the server's runsc root. It
// never calls t.FailNow, so it is safe inside Eventually conditions.
func (s *server) runscList() ([]string, error) {
	if _, err := os.Stat(s.runscRoot); errors.Is(err, os.ErrNotExist) {
		return nil, nil // the server has not created any container yet
	}
	out, err := s.runsc("list", "-quiet")
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, out)
	}
	return strings.Fields(string(out)), nil
}

// process is a /proc entry.
type process struct {
	pid     int
	cmdline string
}

// processesMentioning lists processes (other than this test binary) whose
// command line contains needle.
func processesMentioning(needle string) []process {
	entries, _ := os.ReadDir("/proc")
	var found []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // exited meanwhile
		}
		cmdline := strings.TrimSpace(strings.ReplaceAll(string(raw), "\x00", " "))
		if strings.Contains(cmdline, needle) {
			found = append(found, process{pid: pid, cmdline: cmdline})
		}
	}
	return found
}

// mountsUnder returns the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	mounts, err := runsc.MountsUnder(dir)
	slices.Reverse(mounts)
	return mounts, err
}

// logBuffer collects the server's output lines; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logBuffer) appendLine(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(line)
	l.buf.WriteByte('\n')
}

func (l *logBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.buf.String()
	if len(s) > n {
		s = "...\n" + s[len(s)-n:]
	}
	return s
}

// logged reports whether one line of the server's output contains every
// part.
func (l *logBuffer) logged(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(l.buf.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
