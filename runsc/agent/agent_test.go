package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The test binary doubles as the agent: with roleEnv set, TestMain runs
// init or the relay instead of the tests, so both run as processes of their
// own, as in a sandbox (init's wait4(-1) must not reap the tests' children,
// and the relay replaces its stdio).
const (
	roleEnv   = "SANDPOOL_AGENT_TEST_ROLE"
	socketEnv = "SANDPOOL_AGENT_TEST_SOCKET"
	// noExitSleep keeps a -race build from sleeping a second in every exit
	// with code 0.
	noExitSleep = "GORACE=atexit_sleep_ms=0"
)

func TestMain(m *testing.M) {
	role, name := os.Getenv(roleEnv), os.Getenv(socketEnv)
	// The relay forwards its environment to the program.
	_ = os.Unsetenv(roleEnv)
	_ = os.Unsetenv(socketEnv)
	switch role {
	case "init":
		err := Init(name)
		fmt.Fprintln(os.Stderr, "init:", err)
		os.Exit(1)
	case "run":
		os.Exit(Run(os.Args[1:], Options{Socket: name, StatusFD: -1}))
	case "run-status": // the status pipe is fd 3
		os.Exit(Run(os.Args[1:], Options{Socket: name, StatusFD: 3}))
	case "run-fallback":
		os.Exit(Run(os.Args[1:], Options{Socket: name, StatusFD: -1, Fallback: true}))
	case "run-fallback-status":
		os.Exit(Run(os.Args[1:], Options{Socket: name, StatusFD: 3, Fallback: true}))
	}
	os.Exit(m.Run())
}

var socketCounter atomic.Int64

// uniqueSocket is an abstract socket name no other test (or test run) uses.
func uniqueSocket() string {
	return fmt.Sprintf("sandpool-agent-test-%d-%d", os.Getpid(), socketCounter.Add(1))
}

// startInit starts init on a fresh socket and returns its name and process.
func startInit(t *testing.T) (string, *exec.Cmd) {
	t.Helper()
	name := uniqueSocket()
	return name, startInitOn(t, name, true)
}

func startInitOn(t *testing.T, name string, waitListening bool) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), roleEnv+"=init", socketEnv+"="+name, noExitSleep)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	if waitListening {
		require.Eventually(t, func() bool {
			fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			defer syscall.Close(fd)
			return syscall.Connect(fd, &syscall.SockaddrUnix{Name: "@" + name}) == nil
		}, 5*time.Second, 5*time.Millisecond, "init listens")
	}
	return cmd
}

// relay is one `agent run` process.
type relay struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

// startRelay starts the relay for argv against init's socket name; stdin
// is fed from stdin, when not nil.
func startRelay(t *testing.T, role, name string, stdin *string, argv ...string) *relay {
	t.Helper()
	r := newRelay(role, name, stdin, argv...)
	require.NoError(t, r.cmd.Start())
	t.Cleanup(func() { _ = r.cmd.Process.Kill() })
	return r
}

func newRelay(role, name string, stdin *string, argv ...string) *relay {
	r := &relay{cmd: exec.Command(os.Args[0], argv...)}
	r.cmd.Env = append(os.Environ(), roleEnv+"="+role, socketEnv+"="+name, noExitSleep)
	if stdin != nil {
		r.cmd.Stdin = strings.NewReader(*stdin)
	}
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	return r
}

// startStatusRelay starts a relay with a status pipe (its fd 3) and
// returns the pipe's read end.
func startStatusRelay(t *testing.T, role, name string, argv ...string) (*relay, *os.File) {
	t.Helper()
	r := newRelay(role, name, nil, argv...)
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { _ = pr.Close() })
	r.cmd.ExtraFiles = []*os.File{pw}
	require.NoError(t, r.cmd.Start())
	require.NoError(t, pw.Close())
	t.Cleanup(func() { _ = r.cmd.Process.Kill() })
	return r, pr
}

// readStatus reads the status pipe to EOF (which comes once init and the
// relay closed it) and returns its lines, empty ones included.
func readStatus(t *testing.T, status *os.File) []string {
	t.Helper()
	require.NoError(t, status.SetReadDeadline(time.Now().Add(10*time.Second)))
	data, err := io.ReadAll(status)
	require.NoError(t, err, "the status pipe reached EOF")
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// wait returns the relay's exit code (-1 for a signal death) once it
// exited and its output reached EOF: exec.Cmd's Wait waits for both.
func (r *relay) wait(t *testing.T) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			require.NoError(t, err)
		}
		return r.cmd.ProcessState.ExitCode()
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not exit, or its output never reached EOF")
		return 0
	}
}

// run runs argv through the relay and returns its output and code.
func run(t *testing.T, name string, stdin *string, argv ...string) (stdout, stderr string, code int) {
	t.Helper()
	r := startRelay(t, "run", name, stdin, argv...)
	code = r.wait(t)
	return r.stdout.String(), r.stderr.String(), code
}

func TestOutputAndExitCode(t *testing.T) {
	name, _ := startInit(t)
	stdout, stderr, code := run(t, name, nil, "sh", "-c", "echo out; echo err >&2; exit 3")
	assert.Equal(t, "out\n", stdout)
	assert.Equal(t, "err\n", stderr)
	assert.Equal(t, 3, code)
}

func TestStdin(t *testing.T) {
	name, _ := startInit(t)
	in := "hello\nworld\n"
	stdout, stderr, code := run(t, name, &in, "cat")
	assert.Equal(t, in, stdout)
	assert.Empty(t, stderr)
	assert.Equal(t, 0, code)
}

func TestSignalDeathIs128PlusSignal(t *testing.T) {
	name, _ := startInit(t)
	_, _, code := run(t, name, nil, "sh", "-c", "kill -9 $$")
	assert.Equal(t, 128+9, code)
	_, _, code = run(t, name, nil, "sh", "-c", "kill -TERM $$; echo survived")
	assert.Equal(t, 128+15, code, "the program has default signal dispositions, not init's")
}

func TestCommandNotFound(t *testing.T) {
	name, _ := startInit(t)
	stdout, stderr, code := run(t, name, nil, "sandpool-no-such-command", "x")
	assert.Equal(t, 127, code)
	assert.Empty(t, stdout)
	assert.Equal(t, "sandpool-no-such-command: command not found\n", stderr)

	_, stderr, code = run(t, name, nil, "/no/such/file")
	assert.Equal(t, 127, code)
	assert.Equal(t, "/no/such/file: No such file or directory\n", stderr)

	notExecutable := filepath.Join(t.TempDir(), "script")
	require.NoError(t, os.WriteFile(notExecutable, []byte("#!/bin/sh\necho no\n"), 0o644))
	_, stderr, code = run(t, name, nil, notExecutable)
	assert.Equal(t, 126, code)
	assert.Equal(t, notExecutable+": Permission denied\n", stderr)
}

func TestEnvCwdAndArgs(t *testing.T) {
	name, _ := startInit(t)
	dir := t.TempDir()
	r := &relay{cmd: exec.Command(os.Args[0], "sh", "-c", `echo "$FOO|$(pwd)|$0|$1"`, "zero", "one two")}
	r.cmd.Env = []string{roleEnv + "=run", socketEnv + "=" + name, noExitSleep, "FOO=bar baz", "PATH=" + os.Getenv("PATH")}
	r.cmd.Dir = dir
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	require.NoError(t, r.cmd.Start())
	t.Cleanup(func() { _ = r.cmd.Process.Kill() })
	require.Equal(t, 0, r.wait(t), r.stderr.String())
	assert.Equal(t, "bar baz|"+dir+"|zero|one two\n", r.stdout.String())

	// A relative program name resolves in the relay's PATH and cwd.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hello"), []byte("#!/bin/sh\necho hello from $0\n"), 0o755))
	r = &relay{cmd: exec.Command(os.Args[0], "./hello")}
	r.cmd.Env = []string{roleEnv + "=run", socketEnv + "=" + name, noExitSleep, "PATH=/usr/bin:/bin"}
	r.cmd.Dir = dir
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	require.NoError(t, r.cmd.Start())
	require.Equal(t, 0, r.wait(t), r.stderr.String())
	assert.Equal(t, "hello from ./hello\n", r.stdout.String())
}

// The program is init's child in a session of its own, with no signal
// ignored or blocked: it does not inherit init's signal handling.
func TestProgramSessionAndSignals(t *testing.T) {
	name, initCmd := startInit(t)
	stdout, stderr, code := run(t, name, nil, "sh", "-c", `
echo "$PPID $(grep -E '^Sig(Ign|Blk)' /proc/$$/status | tr '\t\n' '  ')"
[ "$$" = "$(cut -d' ' -f6 /proc/$$/stat)" ] && echo session-leader`)
	require.Equal(t, 0, code, stderr)
	// What the test's own environment ignores stays ignored (a signal
	// ignored at exec is inherited; in a sandbox nothing is); init adds
	// nothing to it.
	status, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	ignored := regexp.MustCompile(`SigIgn:\s*([0-9a-f]+)`).FindSubmatch(status)
	require.NotNil(t, ignored)
	assert.Equal(t, fmt.Sprintf("%d SigBlk: 0000000000000000 SigIgn: %s \nsession-leader\n", initCmd.Process.Pid, ignored[1]), stdout)
}

func TestLargeOutput(t *testing.T) {
	name, _ := startInit(t)
	const size = 4 << 20
	stdout, _, code := run(t, name, nil, "sh", "-c", fmt.Sprintf("head -c %d /dev/zero | tr '\\0' x", size))
	assert.Equal(t, 0, code)
	assert.Equal(t, size, len(stdout))
	assert.Equal(t, size, strings.Count(stdout, "x"))
}

// Killing the relay (kill_process: runsc kill --pgid of the relay) kills
// the program's whole process group, background jobs included, and the
// output reaches EOF.
func TestKillingTheRelayKillsTheProgramGroup(t *testing.T) {
	name, _ := startInit(t)
	dir := t.TempDir()
	r := startRelay(t, "run", name, nil, "sh", "-c", fmt.Sprintf(`
sleep 1000 &
echo $! > %[1]s/bg.tmp && mv %[1]s/bg.tmp %[1]s/bg
echo $$ > %[1]s/fg.tmp && mv %[1]s/fg.tmp %[1]s/fg
echo started
exec sleep 1001`, dir))
	fg, bg := readPID(t, filepath.Join(dir, "fg")), readPID(t, filepath.Join(dir, "bg"))
	t.Cleanup(func() {
		_ = syscall.Kill(fg, syscall.SIGKILL)
		_ = syscall.Kill(bg, syscall.SIGKILL)
	})
	require.False(t, processGone(fg))
	require.False(t, processGone(bg))

	require.NoError(t, r.cmd.Process.Signal(syscall.SIGKILL))
	code := r.wait(t) // returns only once the program's output is closed
	assert.Equal(t, -1, code, "killed")
	require.Eventually(t, func() bool { return processGone(fg) && processGone(bg) },
		5*time.Second, 5*time.Millisecond, "the program and its background job die with the relay")
	assert.Equal(t, "started\n", r.stdout.String())
}

// A background job left by a program that exited normally is not killed:
// only a relay that dies first ends the group.
func TestBackgroundJobOutlivesItsExecution(t *testing.T) {
	name, _ := startInit(t)
	dir := t.TempDir()
	_, stderr, code := run(t, name, nil, "sh", "-c", fmt.Sprintf(
		`sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > %[1]s/bg.tmp && mv %[1]s/bg.tmp %[1]s/bg`, dir))
	require.Equal(t, 0, code, stderr)
	bg := readPID(t, filepath.Join(dir, "bg"))
	t.Cleanup(func() { _ = syscall.Kill(bg, syscall.SIGKILL) })
	time.Sleep(200 * time.Millisecond)
	assert.False(t, processGone(bg), "the background job was killed")
}

// An orphan that keeps the output open holds the output open (the host's
// drain deadline deals with that), but the relay still exits with the
// program.
func TestRelayExitsWithTheProgramNotItsOrphans(t *testing.T) {
	name, _ := startInit(t)
	dir := t.TempDir()
	r := startRelay(t, "run", name, nil, "sh", "-c", fmt.Sprintf(
		`sleep 1000 & echo $! > %[1]s/bg.tmp && mv %[1]s/bg.tmp %[1]s/bg; exit 4`, dir))
	bg := readPID(t, filepath.Join(dir, "bg"))
	t.Cleanup(func() { _ = syscall.Kill(bg, syscall.SIGKILL) })
	done := make(chan struct{})
	go func() {
		_, _ = r.cmd.Process.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay waits for the program's orphans")
	}
}

func TestConcurrentExecutions(t *testing.T) {
	name, _ := startInit(t)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			stdout, stderr, code := run(t, name, nil, "sh", "-c", fmt.Sprintf("echo %d; echo e%d >&2; exit %d", i, i, i))
			assert.Equal(t, fmt.Sprintf("%d\n", i), stdout)
			assert.Equal(t, fmt.Sprintf("e%d\n", i), stderr)
			assert.Equal(t, i, code)
		})
	}
	wg.Wait()
}

// Init drops every catchable signal and keeps serving; its children are
// reaped.
func TestInitSurvivesSignalsAndReaps(t *testing.T) {
	name, initCmd := startInit(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGCHLD, syscall.SIGSEGV} {
		require.NoError(t, initCmd.Process.Signal(sig), "%v", sig)
	}
	for i := range 5 {
		stdout, _, code := run(t, name, nil, "sh", "-c", fmt.Sprintf("echo %d", i))
		assert.Equal(t, fmt.Sprintf("%d\n", i), stdout)
		assert.Equal(t, 0, code)
	}
	require.Eventually(t, func() bool {
		children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", initCmd.Process.Pid, initCmd.Process.Pid))
		return err == nil && strings.TrimSpace(string(children)) == ""
	}, 5*time.Second, 10*time.Millisecond, "init reaped its children")
	assert.False(t, processGone(initCmd.Process.Pid), "init survived the signals")
}

// The first execution may start before init listens: the relay retries.
func TestRelayWaitsForInitToListen(t *testing.T) {
	name := uniqueSocket()
	r := startRelay(t, "run", name, nil, "echo", "late")
	time.Sleep(200 * time.Millisecond)
	startInitOn(t, name, false)
	assert.Equal(t, 0, r.wait(t), r.stderr.String())
	assert.Equal(t, "late\n", r.stdout.String())
}

func TestRelayWithoutInitFails(t *testing.T) {
	begin := time.Now()
	_, stderr, code := run(t, uniqueSocket(), nil, "echo", "never")
	assert.Equal(t, CodeAgentFailure, code)
	assert.Contains(t, stderr, "cannot reach the sandbox's init")
	assert.GreaterOrEqual(t, time.Since(begin), connectWait)
}

// When PID 1 is no agent (this test's PID 1 is not), the relay runs the
// program itself, as runsc exec ran it before the agent existed.
func TestRelayFallsBackWithoutAgent(t *testing.T) {
	if initIsAgent() {
		t.Skip("PID 1 is an agent")
	}
	r := startRelay(t, "run-fallback", uniqueSocket(), nil, "sh", "-c", "echo direct; exit 5")
	assert.Equal(t, 5, r.wait(t))
	assert.Equal(t, "direct\n", r.stdout.String())
	r = startRelay(t, "run-fallback", uniqueSocket(), nil, "sandpool-no-such-command")
	assert.Equal(t, 127, r.wait(t))
	assert.Equal(t, "sandpool-no-such-command: command not found\n", r.stderr.String())
}

// With a status pipe, init reports the program's pid (the host kills its
// group by it) and exit code there.
func TestStatusPipe(t *testing.T) {
	name, _ := startInit(t)
	r, status := startStatusRelay(t, "run-status", name, "sh", "-c", "echo $$; exit 3")
	assert.Equal(t, 3, r.wait(t))
	lines := readStatus(t, status)
	assert.Equal(t, []string{"pid " + strings.TrimSpace(r.stdout.String()), "exit 3"}, lines)

	// The program never gets the status pipe.
	r, status = startStatusRelay(t, "run-status", name, "sh", "-c", "for fd in 3 4 5; do test -e /proc/$$/fd/$fd && echo leaked $fd; done; true")
	assert.Equal(t, 0, r.wait(t))
	assert.Empty(t, r.stdout.String())
	readStatus(t, status)

	// A program that cannot start reports nothing there.
	r, status = startStatusRelay(t, "run-status", name, "sandpool-no-such-command")
	assert.Equal(t, 127, r.wait(t))
	assert.Equal(t, []string{""}, readStatus(t, status))
}

// The host kills an execution by the pid on the status pipe: the program's
// group dies, and the relay exits 128+9 like the program.
func TestKillByStatusPid(t *testing.T) {
	name, _ := startInit(t)
	dir := t.TempDir()
	r, status := startStatusRelay(t, "run-status", name, "sh", "-c",
		fmt.Sprintf(`sleep 1000 & echo $! > %[1]s/bg.tmp && mv %[1]s/bg.tmp %[1]s/bg; exec sleep 1001`, dir))
	bg := readPID(t, filepath.Join(dir, "bg"))
	t.Cleanup(func() { _ = syscall.Kill(bg, syscall.SIGKILL) })
	line := make([]byte, 64)
	n, err := status.Read(line)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(line[:n]), "pid ")))
	require.NoError(t, err, "%q", line[:n])
	require.NoError(t, syscall.Kill(-pid, syscall.SIGKILL))
	assert.Equal(t, 137, r.wait(t))
	assert.Equal(t, []string{"exit 137"}, readStatus(t, status))
	require.Eventually(t, func() bool { return processGone(bg) }, 5*time.Second, 5*time.Millisecond)
}

// User code may kill the relay (`kill -9 -1` spares only init and the
// caller): with a status pipe the host still reads, the execution goes on
// and reports its own exit there.
func TestKilledRelayWithStatusPipe(t *testing.T) {
	name, _ := startInit(t)
	dir := t.TempDir()
	r, status := startStatusRelay(t, "run-status", name, "sh", "-c",
		fmt.Sprintf(`while [ ! -e %[1]s/go ]; do sleep 0.01; done; echo carried on; exit 7`, dir))
	first := make([]byte, 64)
	n, err := status.Read(first)
	require.NoError(t, err)
	assert.Regexp(t, `^pid \d+\n$`, string(first[:n]))
	require.NoError(t, r.cmd.Process.Signal(syscall.SIGKILL))
	_, _ = r.cmd.Process.Wait()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o644))
	assert.Equal(t, []string{"", "exit 7"}, readStatus(t, status), "a probe, then the exit")
}

// After a restore the host's status pipe is gone: a relay killed then
// takes its program's group down, as when nobody reads the status pipe.
func TestKilledRelayWithDeadStatusPipe(t *testing.T) {
	name, _ := startInit(t)
	dir := t.TempDir()
	r, status := startStatusRelay(t, "run-status", name, "sh", "-c",
		fmt.Sprintf(`echo $$ > %[1]s/fg.tmp && mv %[1]s/fg.tmp %[1]s/fg; exec sleep 1000`, dir))
	fg := readPID(t, filepath.Join(dir, "fg"))
	t.Cleanup(func() { _ = syscall.Kill(fg, syscall.SIGKILL) })
	require.NoError(t, status.Close())
	require.NoError(t, r.cmd.Process.Signal(syscall.SIGKILL))
	require.Eventually(t, func() bool { return processGone(fg) }, 5*time.Second, 5*time.Millisecond)
}

func TestFallbackSaysDirect(t *testing.T) {
	if initIsAgent() {
		t.Skip("PID 1 is an agent")
	}
	r, status := startStatusRelay(t, "run-fallback-status", uniqueSocket(), "sh", "-c", "echo $$; test -e /proc/$$/fd/3 && echo leaked; true")
	assert.Equal(t, 0, r.wait(t))
	assert.Equal(t, []string{"direct"}, readStatus(t, status))
	assert.Equal(t, strconv.Itoa(r.cmd.Process.Pid)+"\n", r.stdout.String(), "the relay became the program, without the status pipe")
}

// A request that is not a relay's (no fds) is refused; init goes on.
func TestBadRequest(t *testing.T) {
	name, _ := startInit(t)
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, syscall.Connect(fd, &syscall.SockaddrUnix{Name: "@" + name}))
	conn := os.NewFile(uintptr(fd), "conn")
	defer conn.Close()
	b, err := frame(Request{Argv: []string{"true"}})
	require.NoError(t, err)
	_, err = conn.Write(b)
	require.NoError(t, err)
	var rep reply
	require.NoError(t, readFrame(conn, &rep))
	assert.Equal(t, CodeAgentFailure, rep.Code)
	assert.Contains(t, rep.Error, "3 or 4 fds")

	stdout, _, code := run(t, name, nil, "echo", "ok")
	assert.Equal(t, "ok\n", stdout)
	assert.Equal(t, 0, code)
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "bin"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bin", "tool"), nil, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bin", "data"), nil, 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "bin", "sub"), 0o755))
	env := []string{"A=1", "PATH=/nonexistent:" + dir + "/bin"}

	for _, tc := range []struct {
		argv0, want string
		err         error
	}{
		{"tool", dir + "/bin/tool", nil},
		{"data", dir + "/bin/data", nil}, // execve says EACCES
		{"sub", "", errNotFound},
		{"missing", "", errNotFound},
		{"", "", errNotFound},
		{"./rel", "./rel", nil},
		{"/abs/x", "/abs/x", nil},
	} {
		got, err := lookPath(tc.argv0, env, "/")
		assert.Equal(t, tc.want, got, tc.argv0)
		assert.ErrorIs(t, err, tc.err, tc.argv0)
	}
	// Relative PATH entries resolve against the program's cwd.
	got, err := lookPath("tool", []string{"PATH=bin"}, dir)
	require.NoError(t, err)
	assert.Equal(t, dir+"/bin/tool", got)
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	var data []byte
	require.Eventually(t, func() bool {
		var err error
		data, err = os.ReadFile(path)
		return err == nil
	}, 5*time.Second, 5*time.Millisecond, "pid file %s", path)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	return pid
}

// processGone reports whether pid no longer runs; a zombie counts as gone
// (the test's PID 1 may never reap the orphans).
func processGone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}
