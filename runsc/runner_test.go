package runsc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/runsc/agent"
)

// These tests run the Runner against a shell script standing in for runsc.
// None of them is parallel: a script written while another test forks can
// fail to exec with ETXTBSY.

// fakeRunscHeader logs every call's full argv to $dir/calls, strips the
// global flags (which runsc takes before the subcommand), and parses the
// subcommand's arguments into $cmd, $process, $pidfile, $bundle, $pgid and
// $id (the last argument).
const fakeRunscHeader = `#!/bin/sh
dir='%s'
echo "$*" >> "$dir/calls"
while [ $# -gt 0 ]; do
	case "$1" in
	--*) shift ;;
	*) break ;;
	esac
done
cmd="$1"
[ $# -gt 0 ] && shift
for a in "$@"; do
	case "$a" in
	--process=*) process="${a#--process=}" ;;
	--internal-pid-file=*) pidfile="${a#--internal-pid-file=}" ;;
	--bundle=*) bundle="${a#--bundle=}" ;;
	--pgid=*) pgid="${a#--pgid=}" ;;
	esac
	id="$a"
done
`

// writeScript writes an executable script into dir.
func writeScript(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte(text), 0o755))
	return path
}

// fakeRunsc writes a fake runsc whose behaviour is body (a shell snippet,
// usually a case on $cmd) and returns its path and scratch directory.
func fakeRunsc(t *testing.T, body string) (bin, dir string) {
	t.Helper()
	dir = t.TempDir()
	return writeScript(t, dir, "runsc", fmt.Sprintf(fakeRunscHeader, dir)+body+"\n"), dir
}

// fakeRootfs is a rootfs that passes New's check: it holds an agent.
func fakeRootfs(t *testing.T) string {
	t.Helper()
	rootfs := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(rootfs, filepath.Dir(agent.Path)), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(rootfs, agent.Path), []byte("#!/bin/sh\n"), 0o755))
	return rootfs
}

func newTestRunner(t *testing.T, bin string, mod func(*Config)) *Runner {
	t.Helper()
	cfg := Config{Binary: bin, StateDir: t.TempDir(), Rootfs: fakeRootfs(t), CallTimeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	require.NoError(t, err)
	return r
}

// calls returns the argv of every call the fake runsc received.
func calls(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "calls"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// subcommands strips the global flags from every call.
func subcommands(t *testing.T, r *Runner, dir string) []string {
	t.Helper()
	prefix := strings.Join(r.GlobalFlags(), " ") + " "
	var out []string
	for _, c := range calls(t, dir) {
		require.True(t, strings.HasPrefix(c, prefix), "call %q lacks the global flags %q", c, prefix)
		out = append(out, strings.TrimPrefix(c, prefix))
	}
	return out
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	var data []byte
	require.Eventually(t, func() bool {
		var err error
		data, err = os.ReadFile(path)
		return err == nil && strings.HasSuffix(string(data), "\n")
	}, 5*time.Second, 5*time.Millisecond, "pid file %s", path)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	return pid
}

// processGone reports whether pid no longer runs. A zombie counts as gone:
// the test's pid 1 may never reap orphans.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}

// killOnCleanup kills a process this test's fake runsc started, by pid.
func killOnCleanup(t *testing.T, pid int) {
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
}

func TestNewRejectsRelativePaths(t *testing.T) {
	abs := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"relative binary", Config{Binary: "bin/runsc", StateDir: abs, Rootfs: abs}},
		{"bare binary", Config{Binary: "runsc", StateDir: abs, Rootfs: abs}},
		{"relative state dir", Config{Binary: "/bin/true", StateDir: "state", Rootfs: abs}},
		{"relative rootfs", Config{Binary: "/bin/true", StateDir: abs, Rootfs: "build/rootfs"}},
		{"empty", Config{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "absolute")
		})
	}
}

func TestNewCreatesStateDirsAndDefaults(t *testing.T) {
	state := filepath.Join(t.TempDir(), "nested", "state")
	r, err := New(Config{Binary: "/bin/true", StateDir: state, Rootfs: fakeRootfs(t)})
	require.NoError(t, err)

	assert.Equal(t, filepath.Join(state, "runsc"), r.Root())
	assert.DirExists(t, r.Root())
	assert.DirExists(t, filepath.Join(state, "bundles"))
	assert.Equal(t, filepath.Join(state, "bundles", "abc"), r.BundleDir("abc"))
	assert.Equal(t, "systrap", r.cfg.Platform)
	assert.Equal(t, "none", r.cfg.Network)
	assert.Positive(t, r.cfg.CallTimeout)
	assert.Positive(t, r.cfg.OutputDrain)
}

// A rootfs without the agent (built before it existed) cannot run a
// sandbox: New says what to do.
func TestNewRequiresTheAgent(t *testing.T) {
	noAgent := t.TempDir()
	notExecutable := fakeRootfs(t)
	require.NoError(t, os.Chmod(filepath.Join(notExecutable, agent.Path), 0o644))
	isDir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(isDir, agent.Path), 0o755))
	for name, rootfs := range map[string]string{"missing": noAgent, "not executable": notExecutable, "a directory": isDir} {
		t.Run(name, func(t *testing.T) {
			state := t.TempDir()
			_, err := New(Config{Binary: "/bin/true", StateDir: state, Rootfs: rootfs})
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrNoAgent)
			assert.Contains(t, err.Error(), "make rootfs")
			assert.Contains(t, err.Error(), rootfs)
			assert.NoDirExists(t, filepath.Join(state, "runsc"), "nothing is created")
		})
	}
}

func TestGlobalFlagsComeFirst(t *testing.T) {
	bin, dir := fakeRunsc(t, `echo ok`)
	r := newTestRunner(t, bin, func(c *Config) {
		c.Platform = "ptrace"
		c.ExtraFlags = []string{"--debug"}
	})

	_, err := r.List(context.Background())
	require.NoError(t, err)

	got := calls(t, dir)
	require.Len(t, got, 1)
	assert.Equal(t, "--root="+r.Root()+" --platform=ptrace --network=none --overlay2=root:memory --debug list --quiet", got[0])
}

func TestRunErrorCarriesLastStderrLine(t *testing.T) {
	bin, _ := fakeRunsc(t, `
echo "debug noise" >&2
echo "more noise" >&2
echo "fatal: the real reason" >&2
exit 1`)
	r := newTestRunner(t, bin, nil)

	_, err := r.run(context.Background(), "state", "x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "runsc state")
	assert.Contains(t, err.Error(), "fatal: the real reason")
	assert.NotContains(t, err.Error(), "noise", "only the last line is useful")
	var exitErr interface{ ExitCode() int }
	require.ErrorAs(t, err, &exitErr)
	assert.Equal(t, 1, exitErr.ExitCode())
}

func TestLastLine(t *testing.T) {
	long := strings.Repeat("x", 600)
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", ""},
		{"one line", "boom", "boom"},
		{"trailing newline", "a\nb\n\n", "b"},
		{"long line keeps the end", "a\n" + long + "END", long[len(long)-509:] + "END"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, lastLine(tc.in))
		})
	}
}

func TestRunDeadlineKillsProcessGroup(t *testing.T) {
	bin, dir := fakeRunsc(t, `
sleep 1000 &
echo $! > "$dir/child"
wait`)
	r := newTestRunner(t, bin, func(c *Config) { c.CallTimeout = 200 * time.Millisecond })

	errc := make(chan error, 1)
	go func() { _, err := r.List(context.Background()); errc <- err }()
	// Killed on cleanup too, so a runner that leaks it fails instead of
	// hanging on the pipe the child holds.
	child := readPID(t, filepath.Join(dir, "child"))
	killOnCleanup(t, child)

	err := waitErr(t, errc)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	// The background child holds runsc's stdout; it must die with the group
	// or it would linger and hold the output pipe.
	require.Eventually(t, func() bool { return processGone(child) }, 2*time.Second, 10*time.Millisecond,
		"child %d of the timed-out call survived", child)
}

// waitErr waits a few seconds for a runner call that must end by itself.
func waitErr(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(3 * time.Second):
		t.Fatal("the runsc call did not end at its deadline")
		return nil
	}
}

func TestRunCallerContextCancels(t *testing.T) {
	bin, dir := fakeRunsc(t, `
sleep 1000 &
echo $! > "$dir/child"
wait`)
	r := newTestRunner(t, bin, nil) // long CallTimeout: the caller's ctx must win

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := r.List(ctx); errc <- err }()
	child := readPID(t, filepath.Join(dir, "child"))
	killOnCleanup(t, child)
	cancel()

	assert.ErrorIs(t, waitErr(t, errc), context.Canceled)
	require.Eventually(t, func() bool { return processGone(child) }, 2*time.Second, 10*time.Millisecond)
}

func TestList(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		want    []string
		wantErr string
	}{
		{"ids", `printf 'a\n\n  b  \nc'`, []string{"a", "b", "c"}, ""},
		{"none", `:`, nil, ""},
		{"failure", `echo "cannot read root" >&2; exit 2`, nil, "cannot read root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, dir := fakeRunsc(t, tc.body)
			r := newTestRunner(t, bin, nil)

			ids, err := r.List(context.Background())
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, ids)
			assert.Equal(t, []string{"list --quiet"}, subcommands(t, r, dir))
		})
	}
}

func TestDestroy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		wantErr string
	}{
		{"deleted", `:`, ""},
		{"does not exist", `echo 'container "s1" does not exist' >&2; exit 1`, ""},
		{"not found", `echo 'loading container: not found' >&2; exit 1`, ""},
		{"real failure", `echo 'permission denied' >&2; exit 1`, "permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, dir := fakeRunsc(t, tc.body)
			r := newTestRunner(t, bin, nil)
			require.NoError(t, os.MkdirAll(r.BundleDir("s1"), 0o700))
			require.NoError(t, os.WriteFile(filepath.Join(r.BundleDir("s1"), "config.json"), []byte("{}"), 0o600))

			err := r.Destroy(context.Background(), "s1")
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.Contains(t, err.Error(), "s1")
			} else {
				require.NoError(t, err)
			}
			// The bundle goes either way: it is ours, not runsc's.
			assert.NoDirExists(t, r.BundleDir("s1"))
			assert.Equal(t, []string{"delete --force s1"}, subcommands(t, r, dir))
		})
	}
}

func TestDestroyIsIdempotent(t *testing.T) {
	bin, _ := fakeRunsc(t, `echo 'container "s1" does not exist' >&2; exit 1`)
	r := newTestRunner(t, bin, nil)
	require.NoError(t, r.Destroy(context.Background(), "s1"))
	require.NoError(t, r.Destroy(context.Background(), "s1"))
}

func TestCreate(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
run)
	# The bundle must be complete before runsc runs it.
	cp "$bundle/config.json" "$dir/config.json" || exit 9
	echo "started $id" ;;
esac`)
	r := newTestRunner(t, bin, nil)

	require.NoError(t, r.Create(context.Background(), "s1", CreateOptions{Env: []string{"FOO=bar"}}))

	bundle := r.BundleDir("s1")
	assert.FileExists(t, filepath.Join(bundle, "config.json"))
	assert.Equal(t, []string{"run --detach --bundle=" + bundle + " --pid-file=" + bundle + "/sandbox.pid s1"}, subcommands(t, r, dir))

	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	var spec specs.Spec
	require.NoError(t, json.Unmarshal(data, &spec))
	assert.Equal(t, r.cfg.Rootfs, spec.Root.Path)
	assert.Contains(t, spec.Process.Env, "FOO=bar")
	assert.Equal(t, []string{agent.Path, "init"}, spec.Process.Args)
}

func TestCreateFailureCleansUp(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
run)
	echo "loading the sandbox" >&2
	echo "creating container: cannot mount rootfs" >&2
	exit 1 ;;
delete)
	echo "container \"$id\" does not exist" >&2
	exit 1 ;;
esac`)
	r := newTestRunner(t, bin, nil)

	err := r.Create(context.Background(), "s1", CreateOptions{})
	require.Error(t, err)
	// runsc's stderr goes to the bundle's log file, which is gone by now:
	// the message must have been read before cleaning up.
	assert.Contains(t, err.Error(), "cannot mount rootfs")
	assert.Contains(t, err.Error(), "s1")
	assert.NoDirExists(t, r.BundleDir("s1"))
	// A half-started container is force-deleted too.
	bundle := r.BundleDir("s1")
	assert.Equal(t, []string{"run --detach --bundle=" + bundle + " --pid-file=" + bundle + "/sandbox.pid s1", "delete --force s1"}, subcommands(t, r, dir))
}

func TestCreateExistingBundleFails(t *testing.T) {
	bin, dir := fakeRunsc(t, `:`)
	r := newTestRunner(t, bin, nil)
	require.NoError(t, os.MkdirAll(r.BundleDir("s1"), 0o700))
	marker := filepath.Join(r.BundleDir("s1"), "keep")
	require.NoError(t, os.WriteFile(marker, nil, 0o600))

	err := r.Create(context.Background(), "s1", CreateOptions{})
	require.Error(t, err)
	assert.Empty(t, calls(t, dir), "runsc must not run")
	// Someone else's bundle is not ours to remove.
	assert.FileExists(t, marker)
}

func TestCreateDeadline(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
run)
	sleep 1000 &
	echo $! > "$dir/child"
	wait ;;
esac`)
	r := newTestRunner(t, bin, func(c *Config) { c.CallTimeout = 200 * time.Millisecond })

	errc := make(chan error, 1)
	go func() { errc <- r.Create(context.Background(), "s1", CreateOptions{}) }()
	child := readPID(t, filepath.Join(dir, "child"))
	killOnCleanup(t, child)

	err := waitErr(t, errc)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NoDirExists(t, r.BundleDir("s1"))
	require.Eventually(t, func() bool { return processGone(child) }, 2*time.Second, 10*time.Millisecond)
}

// orphanScript starts, in a session of its own (out of reach of a process
// group kill), a process naming $bundle as runsc's sandbox process does,
// and records its pid in $dir/orphan.
const orphanScript = `setsid sh -c 'while :; do sleep 0.05; done' runsc-sandbox --bundle="$bundle" >/dev/null 2>&1 &
	echo $! > "$dir/orphan"`

// A runsc run killed before it wrote the container's state leaves its
// sandbox process behind, where delete cannot find it: the failed create
// kills it by its bundle.
func TestCreateKilledMidwayLeavesNoProcess(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
run)
	`+orphanScript+`
	sleep 1000 ;;
delete)
	echo "container \"$id\" does not exist" >&2
	exit 1 ;;
esac`)
	r := newTestRunner(t, bin, func(c *Config) { c.CallTimeout = 300 * time.Millisecond })

	errc := make(chan error, 1)
	go func() { errc <- r.Create(context.Background(), "s1", CreateOptions{}) }()
	orphan := readPID(t, filepath.Join(dir, "orphan"))
	killOnCleanup(t, orphan)

	require.Error(t, waitErr(t, errc))
	assert.True(t, processGone(orphan), "the sandbox process of a failed create is killed before Create returns")
	assert.NoDirExists(t, r.BundleDir("s1"))
}

// After a crash, Reconcile kills the processes of every bundle it removes.
func TestReconcileKillsProcessesOfLeftoverBundles(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
list) ;;
spawn) `+orphanScript+` ;;
esac`)
	r := newTestRunner(t, bin, nil)
	bundle := r.BundleDir("crashed")
	require.NoError(t, os.MkdirAll(bundle, 0o700))
	// The fake runsc's "spawn" stands for the crashed server's create.
	require.NoError(t, exec.Command(bin, "spawn", "--bundle="+bundle).Run())
	orphan := readPID(t, filepath.Join(dir, "orphan"))
	killOnCleanup(t, orphan)
	// Another runner's sandbox of the same id.
	require.NoError(t, exec.Command(bin, "spawn", "--bundle="+filepath.Join(t.TempDir(), "bundles", "crashed")).Run())
	bystander := readPID(t, filepath.Join(dir, "orphan"))
	killOnCleanup(t, bystander)

	_, err := r.Reconcile(context.Background())
	require.NoError(t, err)
	assert.True(t, processGone(orphan))
	assert.False(t, processGone(bystander), "another runner's process is not ours")
}

// startExec creates the sandbox's bundle (Exec writes into it) and starts
// spec with the fake runsc.
func startExec(t *testing.T, r *Runner, spec ProcessSpec) *cliProcess {
	t.Helper()
	require.NoError(t, os.MkdirAll(r.BundleDir("s1"), 0o700))
	p, err := r.Exec(context.Background(), "s1", spec)
	require.NoError(t, err)
	cp, ok := p.(*cliProcess)
	require.True(t, ok)
	// Whatever the test does, the fake exec's whole group dies with it.
	t.Cleanup(func() { _ = syscall.Kill(-cp.pid, syscall.SIGKILL) })
	return cp
}

// waitProc waits a few seconds for the process to exit; on failure the
// cleanup of startExec kills it, so the test ends either way.
func waitProc(t *testing.T, p Process) int {
	t.Helper()
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := p.Wait()
		done <- result{code, err}
	}()
	select {
	case r := <-done:
		require.NoError(t, r.err)
		return r.code
	case <-time.After(3 * time.Second):
		t.Fatal("the process did not exit")
		return 0
	}
}

// readBoth reads stdout and stderr concurrently, as the actor does: one
// stream must never block the other.
func readBoth(t *testing.T, p Process) (stdout, stderr string) {
	t.Helper()
	errc := make(chan error, 1)
	var errOut []byte
	go func() {
		var err error
		errOut, err = io.ReadAll(p.Stderr())
		errc <- err
	}()
	out, err := io.ReadAll(p.Stdout())
	require.NoError(t, err)
	require.NoError(t, <-errc)
	return string(out), string(errOut)
}

func TestExecOutputAndExitCode(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
exec)
	cp "$process" "$dir/process.json" || exit 9
	printf out
	printf err >&2
	exit 3 ;;
esac`)
	r := newTestRunner(t, bin, nil)

	p := startExec(t, r, ProcessSpec{Args: []string{"python3", "-c", "print('hi')"}, Env: []string{"X=1"}, SurviveRestore: true})
	stdout, stderr := readBoth(t, p)
	code := waitProc(t, p)

	assert.Equal(t, "out", stdout)
	assert.Equal(t, "err", stderr)
	assert.Equal(t, 3, code)

	// The spec travels in a file, so code of any size fits.
	data, err := os.ReadFile(filepath.Join(dir, "process.json"))
	require.NoError(t, err)
	var spec specs.Process
	require.NoError(t, json.Unmarshal(data, &spec))
	// runsc exec starts the agent's relay, which has init run the program.
	assert.Equal(t, []string{agent.Path, "run", "--status-fd=3", "--", "python3", "-c", "print('hi')"}, spec.Args)
	assert.Equal(t, "/root", spec.Cwd)
	assert.Contains(t, spec.Env, "X=1")

	got := subcommands(t, r, dir)
	require.Len(t, got, 1)
	assert.Regexp(t, `^exec --process=\S+\.json --internal-pid-file=\S+\.pid --pass-fd=3:3 s1$`, got[0])

	// The per-execution files do not pile up in the bundle.
	require.Eventually(t, func() bool {
		entries, err := os.ReadDir(r.BundleDir("s1"))
		return err == nil && len(entries) == 0
	}, 2*time.Second, 10*time.Millisecond)
}

// Without SurviveRestore, runsc exec runs the program itself: no relay,
// no status pipe.
func TestExecWithoutSurviveRestoreRunsTheProgram(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
exec)
	cp "$process" "$dir/process.json" || exit 9
	exit 0 ;;
esac`)
	r := newTestRunner(t, bin, nil)
	p := startExec(t, r, ProcessSpec{Args: []string{"bash", "-c", "echo hi"}})
	readBoth(t, p)
	assert.Equal(t, 0, waitProc(t, p))
	data, err := os.ReadFile(filepath.Join(dir, "process.json"))
	require.NoError(t, err)
	var spec specs.Process
	require.NoError(t, json.Unmarshal(data, &spec))
	assert.Equal(t, []string{"bash", "-c", "echo hi"}, spec.Args)
	got := subcommands(t, r, dir)
	require.Len(t, got, 1)
	assert.Regexp(t, `^exec --process=\S+\.json --internal-pid-file=\S+\.pid s1$`, got[0])
}

func TestExecSignalDeathIs128PlusSignal(t *testing.T) {
	bin, _ := fakeRunsc(t, `kill -TERM $$`)
	r := newTestRunner(t, bin, nil)

	p := startExec(t, r, ProcessSpec{Args: []string{"x"}})
	readBoth(t, p)
	code := waitProc(t, p)
	assert.Equal(t, 128+int(syscall.SIGTERM), code)
}

func TestExecUnknownSandbox(t *testing.T) {
	bin, dir := fakeRunsc(t, `:`)
	r := newTestRunner(t, bin, nil)

	// No bundle: the process spec cannot be written.
	_, err := r.Exec(context.Background(), "nope", ProcessSpec{Args: []string{"x"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nope")
	assert.Empty(t, calls(t, dir))
}

func TestExecStdin(t *testing.T) {
	bin, _ := fakeRunsc(t, `exec cat`)
	r := newTestRunner(t, bin, nil)

	p := startExec(t, r, ProcessSpec{Args: []string{"cat"}})
	_, err := io.WriteString(p.Stdin(), "hello\nworld\n")
	require.NoError(t, err)
	require.NoError(t, p.Stdin().Close())

	stdout, _ := readBoth(t, p)
	code := waitProc(t, p)
	assert.Equal(t, "hello\nworld\n", stdout)
	assert.Equal(t, 0, code)
}

func TestExecKill(t *testing.T) {
	// exec reports its pid like runsc does and the program's on the status
	// pipe like the agent does (the same here), then runs until killed;
	// kill records its arguments and kills the group, as runsc kill --pgid
	// does.
	bin, dir := fakeRunsc(t, `
case "$cmd" in
exec)
	echo $$ > "$pidfile"
	echo "pid $$" >&3
	exec sleep 1000 3>&- ;;
kill)
	echo "$@" > "$dir/kill-args"
	kill -9 -"$pgid" ;;
esac`)
	r := newTestRunner(t, bin, nil)

	p := startExec(t, r, ProcessSpec{Args: []string{"sleep"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, p.Kill(ctx))

	code := waitProc(t, p)
	assert.Equal(t, 137, code)
	args, err := os.ReadFile(filepath.Join(dir, "kill-args"))
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("--pgid=%d s1 KILL\n", p.pid), string(args))

	// Killing what already exited is not an error, even when runsc kill
	// fails because the group is gone.
	require.NoError(t, p.Kill(ctx))
}

// The program's pid comes from the agent's status pipe: Kill signals the
// program's group, not the relay's ("direct": the relay became the
// program, whose pid is in the pid file).
func TestExecKillTargetsTheProgram(t *testing.T) {
	for _, tc := range []struct {
		name, status, want string
	}{
		{"relay", `echo "pid 4242" >&3`, "--pgid=4242 s1 KILL\n"},
		{"direct", `echo direct >&3`, "--pgid=$$ s1 KILL\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, dir := fakeRunsc(t, `
case "$cmd" in
exec)
	echo $$ > "$pidfile"
	echo $$ > "$dir/exec-pid"
	echo "--pgid=$$ s1 KILL" > "$dir/want-direct"
	`+tc.status+`
	exec sleep 1000 3>&- ;;
kill)
	echo "$@" > "$dir/kill-args"
	kill -9 $(cat "$dir/exec-pid") ;;
esac`)
			r := newTestRunner(t, bin, nil)
			p := startExec(t, r, ProcessSpec{Args: []string{"sleep"}, SurviveRestore: true})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			require.NoError(t, p.Kill(ctx))
			waitProc(t, p)
			args, err := os.ReadFile(filepath.Join(dir, "kill-args"))
			require.NoError(t, err)
			want := tc.want
			if tc.name == "direct" {
				data, err := os.ReadFile(filepath.Join(dir, "want-direct"))
				require.NoError(t, err)
				want = string(data)
			}
			assert.Equal(t, want, string(args))
		})
	}
}

// User code may kill the relay (`kill -9 -1`): runsc exec exits, but the
// program runs on, and the execution ends with the exit the status pipe
// reports; its output arrives in full.
func TestExecOutlivesItsRelay(t *testing.T) {
	bin, _ := fakeRunsc(t, `
case "$cmd" in
exec)
	echo "pid 4242" >&3
	(sleep 0.3; echo late; echo "exit 5" >&3) &
	exit 137 ;;
esac`)
	r := newTestRunner(t, bin, nil)
	p := startExec(t, r, ProcessSpec{Args: []string{"x"}, SurviveRestore: true})
	stdout, _ := readBoth(t, p)
	// runsc exec's 137 would mean the status pipe was not waited for.
	assert.Equal(t, 5, waitProc(t, p))
	assert.Equal(t, "late\n", stdout)
}

// Without a "pid" report (the program never started, or a runtime without
// the agent), the status pipe has nothing to say: runsc exec's code
// stands, even while an orphan holds the pipe.
func TestExecWithoutStatusReports(t *testing.T) {
	bin, _ := fakeRunsc(t, `
case "$cmd" in
exec)
	sleep 1000 &
	echo $! > "$(dirname "$pidfile")/orphan"
	exit 127 ;;
esac`)
	r := newTestRunner(t, bin, nil)
	p := startExec(t, r, ProcessSpec{Args: []string{"x"}, SurviveRestore: true})
	killOnCleanup(t, readPID(t, filepath.Join(r.BundleDir("s1"), "orphan")))
	go readBoth(t, p)
	// waitProc's bound fails the test if the orphan held the wait.
	assert.Equal(t, 127, waitProc(t, p))
}

func TestExecKillBeforePidKnown(t *testing.T) {
	// This exec never reports its pid.
	bin, dir := fakeRunsc(t, `
case "$cmd" in
exec) exec sleep 1000 ;;
esac`)
	r := newTestRunner(t, bin, nil)

	p := startExec(t, r, ProcessSpec{Args: []string{"sleep"}})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := p.Kill(ctx)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotContains(t, strings.Join(calls(t, dir), "\n"), " kill ")
}

func TestExecOrphanCannotHoldOutputOpen(t *testing.T) {
	// The background child inherits stdout and outlives the process.
	bin, dir := fakeRunsc(t, `
case "$cmd" in
exec)
	printf hi
	sleep 1000 &
	echo $! > "$dir/orphan"
	exit 0 ;;
esac`)
	r := newTestRunner(t, bin, func(c *Config) { c.OutputDrain = 100 * time.Millisecond })

	p := startExec(t, r, ProcessSpec{Args: []string{"x"}})
	orphan := readPID(t, filepath.Join(dir, "orphan"))
	killOnCleanup(t, orphan)

	done := make(chan string, 1)
	go func() {
		stdout, _ := readBoth(t, p)
		done <- stdout
	}()
	select {
	case stdout := <-done:
		assert.Equal(t, "hi", stdout)
	case <-time.After(3 * time.Second):
		t.Fatal("stdout did not reach EOF after the process exited")
	}
	code := waitProc(t, p)
	assert.Equal(t, 0, code)
	assert.False(t, processGone(orphan), "the orphan is the sandbox's business, not the runner's")
}

// A slow reader (a full flow window) may only get to the pipe after the
// drain deadline; what the process wrote before exiting must still arrive.
func TestExecSlowReaderGetsAllOutput(t *testing.T) {
	const size = 50000 // fits in a pipe, so the process exits unread
	bin, _ := fakeRunsc(t, fmt.Sprintf(`
case "$cmd" in
exec)
	head -c %d /dev/zero | tr '\0' x
	printf done >&2 ;;
esac`, size))
	r := newTestRunner(t, bin, func(c *Config) { c.OutputDrain = time.Nanosecond })

	p := startExec(t, r, ProcessSpec{Args: []string{"x"}})
	code := waitProc(t, p)
	require.Equal(t, 0, code)
	// The spec file goes after the drain deadline was set: from then on,
	// every read is past it.
	require.Eventually(t, func() bool {
		_, err := os.Stat(p.pidPath[:len(p.pidPath)-len(".pid")] + ".json")
		return errors.Is(err, os.ErrNotExist)
	}, 2*time.Second, 5*time.Millisecond)

	stdout, stderr := readBoth(t, p)
	assert.Len(t, stdout, size)
	assert.Equal(t, size, strings.Count(stdout, "x"))
	assert.Equal(t, "done", stderr)
}

// An orphan that never stops writing must not keep the stream open, even
// though output buffered at the deadline is still read.
func TestExecWritingOrphanCannotHoldOutputOpen(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
exec)
	(while :; do echo y; done) &
	echo $! > "$dir/orphan"
	exit 0 ;;
esac`)
	r := newTestRunner(t, bin, func(c *Config) { c.OutputDrain = 50 * time.Millisecond })

	p := startExec(t, r, ProcessSpec{Args: []string{"x"}})
	killOnCleanup(t, readPID(t, filepath.Join(dir, "orphan")))

	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(io.Discard, p.Stdout())
	}()
	go func() { _, _ = io.Copy(io.Discard, p.Stderr()) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("a writing orphan held stdout open")
	}
	code := waitProc(t, p)
	assert.Equal(t, 0, code)
}

func TestReconcile(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
list) printf 'a\nb\n' ;;
delete) [ "$id" = b ] && { echo "container \"b\" does not exist" >&2; exit 1; } ;;
esac
exit 0`)
	r := newTestRunner(t, bin, nil)
	for _, id := range []string{"a", "stale"} {
		require.NoError(t, os.MkdirAll(filepath.Join(r.BundleDir(id), "sub"), 0o700))
	}

	ids, err := r.Reconcile(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, ids)
	assert.Equal(t, []string{"list --quiet", "delete --force a", "delete --force b"}, subcommands(t, r, dir))
	entries, err := os.ReadDir(filepath.Join(r.cfg.StateDir, "bundles"))
	require.NoError(t, err)
	assert.Empty(t, entries, "every bundle of the previous run goes")
	assert.DirExists(t, r.Root())
}

func TestReconcileReportsFailures(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"list fails", `echo "list broke" >&2; exit 1`, "list broke"},
		{"delete fails", `
case "$cmd" in
list) echo a ;;
delete) echo "device busy" >&2; exit 1 ;;
esac`, "device busy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, _ := fakeRunsc(t, tc.body)
			r := newTestRunner(t, bin, nil)
			_, err := r.Reconcile(context.Background())
			require.Error(t, err)
			assert.Contains(t, err.Error(), "reconcile")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestUnescapeMount(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/plain/path", "/plain/path"},
		{`/with\040space`, "/with space"},
		{`/tab\011and\134slash`, "/tab\tand\\slash"},
		{`/trailing\04`, `/trailing\04`},
	} {
		assert.Equal(t, tc.want, unescapeMount(tc.in), tc.in)
	}
}

func TestCreateFromRootfsTar(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
run) cp "$bundle/config.json" "$dir/config.json" ;;
esac`)
	r := newTestRunner(t, bin, nil)
	require.NoError(t, r.Create(context.Background(), "s1", CreateOptions{RootfsTar: "/proc/1/fd/7"}))

	bundle := r.BundleDir("s1")
	assert.Equal(t, []string{"--allow-rootfs-tar-annotation run --detach --bundle=" + bundle + " --pid-file=" + bundle + "/sandbox.pid s1"}, subcommands(t, r, dir),
		"runsc refuses the annotation without the flag")
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	var spec specs.Spec
	require.NoError(t, json.Unmarshal(data, &spec))
	assert.Equal(t, map[string]string{RootfsTarAnnotation: "/proc/1/fd/7"}, spec.Annotations)
	assert.False(t, spec.Root.Readonly, "a tar restore needs a writable root")
}

func TestCreateFromBadRootfsTar(t *testing.T) {
	tests := []struct {
		name      string
		stderr    string
		wantBad   bool
		wantCause string
	}{
		{"corrupt tar", "starting sandbox: mounting root with overlay: failed to create upper layer, opts: {SourceTar:0x1}: failed to read tar header: archive/tar: invalid tar header",
			true, "failed to read tar header: archive/tar: invalid tar header"},
		{"unrelated failure", "creating container: cannot mount rootfs", false, "cannot mount rootfs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin, _ := fakeRunsc(t, fmt.Sprintf(`
case "$cmd" in
run) echo '%s' >&2; exit 128 ;;
esac`, tt.stderr))
			r := newTestRunner(t, bin, nil)
			err := r.Create(context.Background(), "s1", CreateOptions{RootfsTar: "/snap.tar"})
			require.Error(t, err)
			assert.Equal(t, tt.wantBad, errors.Is(err, ErrBadRootfsTar), "%v", err)
			var tarErr *RootfsTarError
			if errors.As(err, &tarErr) {
				assert.Equal(t, tt.wantCause, tarErr.Cause, "the cause alone, without runsc's option dump")
			}
			assert.True(t, strings.HasSuffix(err.Error(), tt.wantCause), "%v", err)
			assert.NoDirExists(t, r.BundleDir("s1"))
		})
	}
}

func TestSnapshotFilesystem(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
tar)
	for a in "$@"; do case "$a" in --file=*) file="${a#--file=}" ;; esac; done
	[ "$id" = slow ] && exec sleep 60
	echo "upper layer of $id" > "$file" ;;
esac`)
	r := newTestRunner(t, bin, nil)
	dest := filepath.Join(t.TempDir(), "snap.tar")

	require.NoError(t, r.SnapshotFilesystem(context.Background(), "s1", dest))
	data, err := os.ReadFile(dest)
	require.NoError(t, err)
	assert.Equal(t, "upper layer of s1\n", string(data))
	assert.Equal(t, []string{"tar rootfs-upper --file=" + dest + " s1"}, subcommands(t, r, dir))

	assert.Error(t, r.SnapshotFilesystem(context.Background(), "s1", "relative.tar"))

	// Cancelling kills runsc promptly, even past CallTimeout's bound.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = r.SnapshotFilesystem(ctx, "slow", dest)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestDestroyKillsTheSandboxProcessFirst(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
delete) echo "deleted $id" ;;
esac`)
	r := newTestRunner(t, bin, nil)
	// Stand-ins for sandbox processes: the right one (argv0 runsc-sandbox,
	// last argument its id) and one whose PID file is stale (another id).
	start := func(id string) *exec.Cmd {
		cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{"runsc-sandbox", "-c", "sleep 60", id}}
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
		return cmd
	}
	sandbox, stranger := start("s1"), start("someone-else")
	for id, pid := range map[string]int{"s1": sandbox.Process.Pid, "s2": stranger.Process.Pid} {
		require.NoError(t, os.MkdirAll(r.BundleDir(id), 0o700))
		require.NoError(t, os.WriteFile(r.sandboxPIDFile(id), []byte(strconv.Itoa(pid)), 0o600))
	}

	require.NoError(t, r.Destroy(context.Background(), "s1"))
	state, err := sandbox.Process.Wait()
	require.NoError(t, err)
	assert.Equal(t, "signal: killed", state.String())

	require.NoError(t, r.Destroy(context.Background(), "s2"))
	assert.NoError(t, stranger.Process.Signal(syscall.Signal(0)), "a PID that names another process is left alone")
	assert.Equal(t, []string{"delete --force s1", "delete --force s2"}, subcommands(t, r, dir))
}

func TestAlive(t *testing.T) {
	bin, dir := fakeRunsc(t, `:`)
	r := newTestRunner(t, bin, nil)
	sandbox := &exec.Cmd{Path: "/bin/sh", Args: []string{"runsc-sandbox", "-c", "sleep 60", "s1"}}
	require.NoError(t, sandbox.Start())
	t.Cleanup(func() { _ = sandbox.Process.Kill(); _, _ = sandbox.Process.Wait() })
	writePID := func(id string, pid int) {
		require.NoError(t, os.MkdirAll(r.BundleDir(id), 0o700))
		require.NoError(t, os.WriteFile(r.sandboxPIDFile(id), []byte(strconv.Itoa(pid)), 0o600))
	}
	writePID("s1", sandbox.Process.Pid)
	writePID("stale", sandbox.Process.Pid) // the PID now names another sandbox
	writePID("garbled", 0)

	ctx := context.Background()
	assert.NoError(t, r.Alive(ctx, "s1"))
	for _, id := range []string{"stale", "garbled", "no-pid-file"} {
		assert.ErrorIs(t, r.Alive(ctx, id), ErrSandboxDead, id)
	}

	// kill -9 leaves a zombie until it is reaped: it counts as dead at once.
	require.NoError(t, sandbox.Process.Signal(syscall.SIGKILL))
	require.Eventually(t, func() bool { return errors.Is(r.Alive(ctx, "s1"), ErrSandboxDead) },
		5*time.Second, 10*time.Millisecond)
	assert.Empty(t, subcommands(t, r, dir), "Alive runs no runsc command")
}

// startSandboxStandIn starts a process that passes for sandbox id's
// runsc-sandbox (argv0 runsc-sandbox, last argument the id) and records it
// in the bundle's pid file, so Alive accepts the sandbox.
func startSandboxStandIn(t *testing.T, r *Runner, id string) *exec.Cmd {
	t.Helper()
	cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{"runsc-sandbox", "-c", "sleep 60", id}}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	require.NoError(t, os.MkdirAll(r.BundleDir(id), 0o700))
	require.NoError(t, os.WriteFile(r.sandboxPIDFile(id), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600))
	return cmd
}

func TestCheckpoint(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
checkpoint)
	for a in "$@"; do case "$a" in --image-path=*) img="${a#--image-path=}" ;; esac; done
	[ "$id" = broken ] && { echo "noise" >&2; echo "checkpoint failed: disk full" >&2; exit 128; }
	echo "state of $id" > "$img/checkpoint.img" ;;
esac`)
	r := newTestRunner(t, bin, nil)
	img := t.TempDir()
	ctx := context.Background()

	startSandboxStandIn(t, r, "s1")
	config := []byte(`{"ociVersion":"1.2.1", "annotations":{"k":"v"}}` + "\n")
	require.NoError(t, os.WriteFile(filepath.Join(r.BundleDir("s1"), "config.json"), config, 0o600))
	spec, err := r.Checkpoint(ctx, "s1", img)
	require.NoError(t, err)
	assert.Equal(t, config, spec, "the spec is config.json byte for byte")
	assert.FileExists(t, filepath.Join(img, "checkpoint.img"))
	assert.Equal(t, []string{"checkpoint --image-path=" + img + " s1"}, subcommands(t, r, dir))
	assert.DirExists(t, r.BundleDir("s1"), "the container exists until Destroy")

	startSandboxStandIn(t, r, "broken")
	require.NoError(t, os.WriteFile(filepath.Join(r.BundleDir("broken"), "config.json"), config, 0o600))
	_, err = r.Checkpoint(ctx, "broken", img)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "broken")
	assert.True(t, strings.HasSuffix(err.Error(), "checkpoint failed: disk full"), "%v", err)

	_, err = r.Checkpoint(ctx, "unknown", img)
	assert.ErrorIs(t, err, ErrNotFound)

	// A sandbox whose process is gone has nothing to save: no runsc call.
	require.NoError(t, os.MkdirAll(r.BundleDir("dead"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(r.BundleDir("dead"), "config.json"), config, 0o600))
	_, err = r.Checkpoint(ctx, "dead", img)
	assert.ErrorIs(t, err, ErrSandboxDead)

	_, err = r.Checkpoint(ctx, "s1", "relative/img")
	assert.Error(t, err)
	assert.Len(t, calls(t, dir), 2, "only s1 and broken reached runsc")
}

func TestCheckpointDeadline(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
checkpoint)
	sleep 1000 &
	echo $! > "$dir/child"
	wait ;;
esac`)
	r := newTestRunner(t, bin, nil) // long CallTimeout: the caller's deadline wins
	startSandboxStandIn(t, r, "s1")
	require.NoError(t, os.WriteFile(filepath.Join(r.BundleDir("s1"), "config.json"), []byte("{}"), 0o600))

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() { _, err := r.Checkpoint(ctx, "s1", t.TempDir()); errc <- err }()
	child := readPID(t, filepath.Join(dir, "child"))
	killOnCleanup(t, child)

	assert.ErrorIs(t, waitErr(t, errc), context.DeadlineExceeded)
	require.Eventually(t, func() bool { return processGone(child) }, 2*time.Second, 10*time.Millisecond,
		"the timed-out runsc checkpoint's group must die")
}

// restoreRunsc is a fake runsc whose restore copies the bundle's config.json
// for the test and fails with $RESTORE_ERR (runsc's message) when set.
const restoreRunsc = `
case "$cmd" in
restore)
	cp "$bundle/config.json" "$dir/config.json" || exit 9
	if [ -n "$RESTORE_ERR" ]; then
		echo "W1203 debug noise" >&2
		printf '%s\n' "$RESTORE_ERR" >&2
		exit 128
	fi ;;
delete)
	echo "container \"$id\" does not exist" >&2
	exit 1 ;;
esac`

func TestRestore(t *testing.T) {
	bin, dir := fakeRunsc(t, restoreRunsc)
	r := newTestRunner(t, bin, nil)
	img := t.TempDir()
	spec := []byte(`{"ociVersion":"1.2.1","process":{"args":["/bin/sh"]},"root":{"path":"/rootfs"}}`)

	require.NoError(t, r.Restore(context.Background(), "s1", img, spec))

	bundle := r.BundleDir("s1")
	assert.Equal(t, []string{"restore --detach --image-path=" + img + " --bundle=" + bundle + " --pid-file=" + bundle + "/sandbox.pid s1"},
		subcommands(t, r, dir))
	got, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	assert.Equal(t, spec, got, "a spec without the tar annotation is used byte for byte")
}

func TestRestoreDropsRootfsTarAnnotation(t *testing.T) {
	bin, dir := fakeRunsc(t, restoreRunsc)
	r := newTestRunner(t, bin, nil)
	img := t.TempDir()

	for _, tc := range []struct {
		name            string
		annotations     map[string]string
		wantAnnotations map[string]string
	}{
		{"only the tar", map[string]string{RootfsTarAnnotation: "/proc/42/fd/7"}, nil},
		{"others stay", map[string]string{RootfsTarAnnotation: "/proc/42/fd/7", "dev.example.x": "y"}, map[string]string{"dev.example.x": "y"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, os.RemoveAll(filepath.Join(dir, "calls")))
			in := BuildSpec(SpecConfig{Rootfs: "/rootfs", Env: []string{"A=1"}, Annotations: tc.annotations})
			spec, err := json.Marshal(in)
			require.NoError(t, err)
			id := "s-" + strings.ReplaceAll(tc.name, " ", "-")

			require.NoError(t, r.Restore(context.Background(), id, img, spec))

			data, err := os.ReadFile(filepath.Join(dir, "config.json"))
			require.NoError(t, err)
			var out specs.Spec
			require.NoError(t, json.Unmarshal(data, &out))
			assert.Equal(t, tc.wantAnnotations, out.Annotations)
			in.Annotations, out.Annotations = nil, nil
			assert.Equal(t, *in, out, "everything else is kept")
			// runsc compares the restore spec with the checkpointed one,
			// annotations included: only a warning may report the change.
			bundle := r.BundleDir(id)
			assert.Equal(t, []string{"--restore-spec-validation=warning restore --detach --image-path=" + img + " --bundle=" + bundle + " --pid-file=" + bundle + "/sandbox.pid " + id},
				subcommands(t, r, dir))
		})
	}
}

func TestRestoreFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stderr  string
		wantBad bool
	}{
		// Messages of the pinned runsc for broken images.
		{"state file missing", `starting container: opening state file "/img/checkpoint.img" failed: open /img/checkpoint.img: no such file or directory`, true},
		{"pages file missing", `starting container: opening pages file "/img/pages.img" failed: open /img/pages.img: no such file or directory`, true},
		{"truncated metadata", `starting container: restoring container "s1": failed to load kernel: main MF start failed: failed to read metadata length: EOF`, true},
		{"sandbox crashed on garbage", `starting container: restoring container "s1": urpc method "containerManager.Restore" failed: EOF`, true},
		{"spec mismatch", `starting container: restoring container "s1": failed to handle restore spec validation: failed to validate restore spec: "Mounts" does not match`, true},
		{"sandbox cannot start", `creating container: cannot create sandbox: cannot create sandbox process: fork/exec /proc/self/exe: resource temporarily unavailable`, false},
		{"network", `starting container: setting up network: no such device`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, dir := fakeRunsc(t, restoreRunsc)
			r := newTestRunner(t, bin, nil)
			t.Setenv("RESTORE_ERR", tc.stderr)
			img := t.TempDir()

			err := r.Restore(context.Background(), "s1", img, []byte(`{}`))
			require.Error(t, err)
			assert.Equal(t, tc.wantBad, errors.Is(err, ErrBadImage), "%v", err)
			assert.True(t, strings.HasSuffix(err.Error(), tc.stderr), "runsc's message ends the error: %v", err)
			assert.Contains(t, err.Error(), "s1")
			assert.NoDirExists(t, r.BundleDir("s1"))
			bundle := r.BundleDir("s1")
			assert.Equal(t, []string{"restore --detach --image-path=" + img + " --bundle=" + bundle + " --pid-file=" + bundle + "/sandbox.pid s1", "delete --force s1"},
				subcommands(t, r, dir), "a half-restored container is force-deleted")
		})
	}
}

func TestRestoreMissingImageRunsNothing(t *testing.T) {
	bin, dir := fakeRunsc(t, restoreRunsc)
	r := newTestRunner(t, bin, nil)
	file := filepath.Join(t.TempDir(), "not-a-dir")
	require.NoError(t, os.WriteFile(file, nil, 0o600))

	for _, img := range []string{filepath.Join(t.TempDir(), "missing"), file} {
		err := r.Restore(context.Background(), "s1", img, []byte(`{}`))
		assert.ErrorIs(t, err, ErrBadImage, img)
		assert.NoDirExists(t, r.BundleDir("s1"))
	}
	assert.Error(t, r.Restore(context.Background(), "s1", "relative/img", []byte(`{}`)))
	assert.Error(t, r.Restore(context.Background(), "s1", t.TempDir(), []byte(`not json`)))
	assert.NoDirExists(t, r.BundleDir("s1"))
	assert.Empty(t, calls(t, dir))
}

func TestRestoreExistingBundleFails(t *testing.T) {
	bin, dir := fakeRunsc(t, restoreRunsc)
	r := newTestRunner(t, bin, nil)
	marker := filepath.Join(r.BundleDir("s1"), "keep")
	require.NoError(t, os.MkdirAll(r.BundleDir("s1"), 0o700))
	require.NoError(t, os.WriteFile(marker, nil, 0o600))

	require.Error(t, r.Restore(context.Background(), "s1", t.TempDir(), []byte(`{}`)))
	assert.FileExists(t, marker, "a live sandbox's bundle is not ours to remove")
	assert.Empty(t, calls(t, dir))
}

func TestRestoreDeadline(t *testing.T) {
	bin, dir := fakeRunsc(t, `
case "$cmd" in
restore)
	sleep 1000 &
	echo $! > "$dir/child"
	wait ;;
esac`)
	r := newTestRunner(t, bin, func(c *Config) { c.CallTimeout = 200 * time.Millisecond })

	errc := make(chan error, 1)
	go func() { errc <- r.Restore(context.Background(), "s1", t.TempDir(), []byte(`{}`)) }()
	child := readPID(t, filepath.Join(dir, "child"))
	killOnCleanup(t, child)

	err := waitErr(t, errc)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, ErrBadImage)
	assert.NoDirExists(t, r.BundleDir("s1"))
	require.Eventually(t, func() bool { return processGone(child) }, 2*time.Second, 10*time.Millisecond)
}

func TestRestoreFailureMessage(t *testing.T) {
	// The sandbox shares runsc's log: a corrupt image makes it panic, and
	// its stack may come after runsc's own message, which itself may go on
	// over several lines.
	log := strings.Join([]string{
		"W1203 17:09:01.1 restore.go:1] something",
		`starting container: restoring container "s1": failed to load kernel: error decoding from 0x249: EOF:`,
		"goroutine 1 [running]:",
		"panic({0x138ef60?, 0x53238d0?})",
		"\t/root/go/pkg/mod/gvisor.dev/gvisor/pkg/urpc/urpc.go:472 +0x6b",
		"",
	}, "\n")
	msg := restoreFailure(log)
	assert.Equal(t, `starting container: restoring container "s1": failed to load kernel: error decoding from 0x249: EOF:`, msg)
	assert.True(t, isBadImage(msg))
	assert.Equal(t, "just the end", restoreFailure("a\njust the end\n"), "an unknown log gives its last line")
}

// The tests below run the real runsc (bin/runsc, `make runsc`) on the real
// rootfs (build/rootfs, `make rootfs`), as root. Without them they skip,
// except under CI=true where they fail: CI must exercise the real runtime.

// realRunner returns a Runner on the real runsc with a state dir of its
// own. Its cleanup deletes every container under that root, whatever the
// test did, and unmounts what runsc left.
func realRunner(t *testing.T) *Runner {
	t.Helper()
	repo, err := filepath.Abs("..")
	require.NoError(t, err)
	bin := filepath.Join(repo, "bin", "runsc")
	rootfs := filepath.Join(repo, "build", "rootfs")
	if missing := missingRealRuntime(bin, rootfs); missing != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI=true: the real runtime must be tested; run `make runsc rootfs` as root)", missing)
		}
		t.Skipf("%s (run `make runsc rootfs` as root to enable the real-runsc tests)", missing)
	}
	// A short path: runsc's unix sockets live under the root, and a test's
	// TempDir (named after the test) could exceed the socket path limit.
	state, err := os.MkdirTemp("", "sandpool-runsc-")
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, os.RemoveAll(state)) })
	r, err := New(Config{Binary: bin, StateDir: state, Rootfs: rootfs, CallTimeout: 30 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := r.Reconcile(ctx)
		assert.NoError(t, err, "deleting the test's containers")
	})
	return r
}

// missingRealRuntime names what the real-runsc tests lack, or "".
func missingRealRuntime(bin, rootfs string) string {
	if os.Geteuid() != 0 {
		return "runsc needs root"
	}
	if info, err := os.Stat(bin); err != nil || info.Mode()&0o111 == 0 {
		return "no runsc binary at " + bin
	}
	// `make rootfs` writes its markers last: a half-built rootfs lacks them.
	for _, marker := range []string{".sandpool-rootfs", ".sandpool-stdio", agent.Path} {
		if _, err := os.Stat(filepath.Join(rootfs, marker)); err != nil {
			return "no complete rootfs at " + rootfs
		}
	}
	return ""
}

// realID is a fresh sandbox id: cgroups are named after ids whatever the
// root, so ids must not collide with another test run; the random part
// comes first, so one id is never a prefix of another (runsc matches ids
// by prefix).
func realID(t *testing.T, name string) string {
	t.Helper()
	var b [6]byte
	f, err := os.Open("/dev/urandom")
	require.NoError(t, err)
	defer f.Close()
	_, err = io.ReadFull(f, b[:])
	require.NoError(t, err)
	return fmt.Sprintf("%x-%s", b, name)
}

// realShell runs a bash script in the sandbox and returns its stdout; it
// must exit 0.
func realShell(t *testing.T, r *Runner, id, script string) string {
	t.Helper()
	out, err := tryShell(r, id, script)
	require.NoError(t, err, "script %q", script)
	return out
}

// tryShell is realShell for conditions polled by require.Eventually, which
// must not fail the test while they are not met yet.
func tryShell(r *Runner, id, script string) (string, error) {
	return tryShellSpec(r, id, ProcessSpec{Args: []string{"/bin/bash", "-c", script}})
}

// realShellSurviving is realShell with SurviveRestore: the background jobs
// the script starts outlive a restore.
func realShellSurviving(t *testing.T, r *Runner, id, script string) string {
	t.Helper()
	out, err := tryShellSpec(r, id, ProcessSpec{Args: []string{"/bin/bash", "-c", script}, SurviveRestore: true})
	require.NoError(t, err, "script %q", script)
	return out
}

func tryShellSpec(r *Runner, id string, spec ProcessSpec) (string, error) {
	p, err := r.Exec(context.Background(), id, spec)
	if err != nil {
		return "", err
	}
	stderr := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(p.Stderr())
		stderr <- b
	}()
	out, _ := io.ReadAll(p.Stdout())
	errOut := <-stderr
	code, err := p.Wait()
	if err == nil && code != 0 {
		err = fmt.Errorf("exit code %d: %s", code, errOut)
	}
	return string(out), err
}

// assertGone checks that nothing of sandbox id is left: no container, no
// bundle, no sandbox process, no cgroup, no mount under the state dir but
// the netns runsc keeps for the whole root.
func assertGone(t *testing.T, r *Runner, id string) {
	t.Helper()
	ids, err := r.List(context.Background())
	require.NoError(t, err)
	assert.NotContains(t, ids, id, "runsc still lists the container")
	assert.NoDirExists(t, r.BundleDir(id))
	assert.Equal(t, 0, sandboxProcessOf(t, id), "a runsc-sandbox process of %s survived", id)
	require.Eventually(t, func() bool {
		dirs, err := filepath.Glob("/sys/fs/cgroup/*/" + id)
		return err == nil && len(dirs) == 0
	}, 5*time.Second, 20*time.Millisecond, "cgroups of %s are left", id)
	mounts, err := MountsUnder(r.cfg.StateDir)
	require.NoError(t, err)
	for _, m := range mounts {
		assert.Equal(t, filepath.Join(r.Root(), "null-netns"), m, "unexpected mount left")
	}
}

// sandboxProcessOf finds a live runsc-sandbox process of id in /proc (0 if
// none); zombies do not count.
func sandboxProcessOf(t *testing.T, id string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if len(args) > 1 && args[0] == "runsc-sandbox" && args[len(args)-1] == id && !processGone(pid) {
			return pid
		}
	}
	return 0
}

// counterPy counts in memory and publishes "PID COUNT" every 50 ms,
// atomically, so a reader never sees a half-written file. It has no single
// quote: it goes in a shell's single-quoted argument.
const counterPy = `
import os, sys, time
path, n = sys.argv[1], 0
while True:
    n += 1
    with open(path + ".tmp", "w") as f:
        f.write("%d %d" % (os.getpid(), n))
    os.rename(path + ".tmp", path)
    time.sleep(0.05)
`

// readCounter returns the PID and count a counterPy publishes at path.
func readCounter(t *testing.T, r *Runner, id, path string) (pid, n int) {
	t.Helper()
	pid, n, err := tryCounter(r, id, path)
	require.NoError(t, err)
	return pid, n
}

// tryCounter is readCounter for polled conditions: the counter may not
// have published anything yet.
func tryCounter(r *Runner, id, path string) (pid, n int, err error) {
	out, err := tryShell(r, id, "cat "+path)
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscanf(out, "%d %d", &pid, &n); err != nil {
		return 0, 0, fmt.Errorf("counter file %q: %w", out, err)
	}
	return pid, n, nil
}

func TestRealCheckpointRestore(t *testing.T) {
	r := realRunner(t)
	ctx := context.Background()
	id := realID(t, "ckpt")
	require.NoError(t, r.Create(ctx, id, CreateOptions{}))

	realShell(t, r, id, `echo in-tmp > /tmp/kept.txt && echo in-root > /root/kept.txt`)
	// A background job of an execution, as client code starts one. gVisor
	// kills every process of exec origin on restore; the agent's init
	// started this one, so it is not.
	realShellSurviving(t, r, id, `nohup python3 -c '`+counterPy+`' /tmp/count >/dev/null 2>&1 &`)
	require.Eventually(t, func() bool {
		_, n, err := tryCounter(r, id, "/tmp/count")
		return err == nil && n > 5
	}, 10*time.Second, 50*time.Millisecond, "the counter runs before the checkpoint")
	// An execution still running when the checkpoint stops the sandbox.
	running, err := r.Exec(ctx, id, ProcessSpec{Args: []string{"bash", "-c", `echo $$ > /tmp/running.pid; sleep 1000 & exec sleep 1001`}, SurviveRestore: true})
	require.NoError(t, err)
	go func() { _, _ = io.Copy(io.Discard, running.Stderr()) }()
	go func() { _, _ = io.Copy(io.Discard, running.Stdout()) }()
	require.Eventually(t, func() bool {
		_, err := tryShell(r, id, "test -s /tmp/running.pid")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	runningPID := strings.TrimSpace(realShell(t, r, id, "cat /tmp/running.pid"))
	counterPID, before := readCounter(t, r, id, "/tmp/count")

	config, err := os.ReadFile(filepath.Join(r.BundleDir(id), "config.json"))
	require.NoError(t, err)
	img := t.TempDir()
	spec, err := r.Checkpoint(ctx, id, img)
	require.NoError(t, err)
	assert.Equal(t, config, spec)
	assert.FileExists(t, filepath.Join(img, "checkpoint.img"))
	require.Eventually(t, func() bool { return errors.Is(r.Alive(ctx, id), ErrSandboxDead) },
		5*time.Second, 10*time.Millisecond, "the checkpoint stops the sandbox")
	ids, err := r.List(ctx)
	require.NoError(t, err)
	assert.Contains(t, ids, id, "the container exists until Destroy")
	// The running execution ended with the sandbox.
	_ = waitProc(t, running)

	// The same id comes back once the checkpointed container is destroyed.
	require.NoError(t, r.Destroy(ctx, id))
	assertGone(t, r, id)
	require.NoError(t, r.Restore(ctx, id, img, spec))

	// Restore returned: the sandbox runs, Alive and exec work (init still
	// serves its socket).
	require.NoError(t, r.Alive(ctx, id))
	assert.Equal(t, "in-tmp\nin-root\n", realShell(t, r, id, "cat /tmp/kept.txt /root/kept.txt"))
	pid, after := readCounter(t, r, id, "/tmp/count")
	assert.Equal(t, counterPID, pid, "the same process")
	assert.GreaterOrEqual(t, after, before, "the count goes on from its memory, not from zero")
	// The sandbox no longer needs the image.
	require.NoError(t, os.RemoveAll(img))
	require.Eventually(t, func() bool {
		_, n, err := tryCounter(r, id, "/tmp/count")
		return err == nil && n > after
	}, 10*time.Second, 50*time.Millisecond, "the counter keeps counting after the restore")

	// The execution that was running is over: its relay died with the
	// restore, and init killed the program's group, as kill_process would.
	require.Eventually(t, func() bool {
		out, err := tryShell(r, id, "test -e /proc/"+runningPID+" && echo alive || echo gone")
		return err == nil && out == "gone\n"
	}, 5*time.Second, 50*time.Millisecond, "an execution running at the checkpoint survived the restore")
	// Executions after the restore start background jobs that live on too.
	realShellSurviving(t, r, id, `nohup sleep 1000 >/dev/null 2>&1 & echo $! > /tmp/later.pid`)
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, "alive\n", realShell(t, r, id, `test -e /proc/$(cat /tmp/later.pid) && echo alive`))

	require.NoError(t, r.Destroy(ctx, id))
	assertGone(t, r, id)
}

// Executions go through the agent: exit codes, output, stdin, signal
// deaths, kill_process, a missing command and `kill 1` behave as when
// runsc exec ran the program itself.
func TestRealExecSemantics(t *testing.T) {
	for _, mode := range []struct {
		name    string
		survive bool
	}{{"runsc exec", false}, {"agent relay", true}} {
		t.Run(mode.name, func(t *testing.T) { realExecSemantics(t, mode.survive) })
	}
}

func realExecSemantics(t *testing.T, surviveRestore bool) {
	r := realRunner(t)
	ctx := context.Background()
	id := realID(t, "exec")
	require.NoError(t, r.Create(ctx, id, CreateOptions{}))

	run := func(spec ProcessSpec, stdin string) (stdout, stderr string, code int) {
		t.Helper()
		spec.SurviveRestore = surviveRestore
		p, err := r.Exec(ctx, id, spec)
		require.NoError(t, err)
		go func() {
			_, _ = io.WriteString(p.Stdin(), stdin)
			_ = p.Stdin().Close()
		}()
		stdout, stderr = readBoth(t, p)
		return stdout, stderr, waitProc(t, p)
	}

	t.Run("output and code", func(t *testing.T) {
		stdout, stderr, code := run(ProcessSpec{Args: []string{"bash", "-c", "echo out; echo err >&2; exit 3"}}, "")
		assert.Equal(t, "out\n", stdout)
		assert.Equal(t, "err\n", stderr)
		assert.Equal(t, 3, code)
	})
	t.Run("env cwd and utf-8", func(t *testing.T) {
		stdout, _, code := run(ProcessSpec{
			Args: []string{"python3", "-c", `import os; print(os.getcwd(), os.environ["X"], os.environ["HOME"], "héllo ✓")`},
			Env:  []string{"X=1"}, Cwd: "/tmp",
		}, "")
		assert.Equal(t, "/tmp 1 /root héllo ✓\n", stdout)
		assert.Equal(t, 0, code)
	})
	t.Run("stdin", func(t *testing.T) {
		stdout, _, code := run(ProcessSpec{Args: []string{"cat"}}, "hello\nworld\n")
		assert.Equal(t, "hello\nworld\n", stdout)
		assert.Equal(t, 0, code)
	})
	t.Run("large output", func(t *testing.T) {
		const size = 5 << 20
		stdout, _, code := run(ProcessSpec{Args: []string{"python3", "-c", fmt.Sprintf("import sys; sys.stdout.write('x' * %d)", size)}}, "")
		assert.Equal(t, 0, code)
		assert.Equal(t, size, len(stdout))
	})
	t.Run("code larger than execve takes", func(t *testing.T) {
		// Over 128 KiB in one argument: runsc exec runs it without the
		// relay, since init's execve would refuse it.
		code := strings.Repeat("x = 1\n", 40000) + "print('big')"
		stdout, stderr, code2 := run(ProcessSpec{Args: []string{"python3", "-c", code}}, "")
		assert.Equal(t, "big\n", stdout, stderr)
		assert.Equal(t, 0, code2)
		// The largest argument execve takes goes through the relay.
		edge := "print('edge')\n#"
		edge += strings.Repeat("x", execMaxElemSize-1-len(edge))
		require.Equal(t, surviveRestore, execSpec(ProcessSpec{Args: []string{"python3", "-c", edge}, SurviveRestore: surviveRestore}).Args[0] == agent.Path)
		stdout, stderr, code2 = run(ProcessSpec{Args: []string{"python3", "-c", edge}}, "")
		assert.Equal(t, "edge\n", stdout, stderr)
		assert.Equal(t, 0, code2)
	})
	t.Run("signal death", func(t *testing.T) {
		_, _, code := run(ProcessSpec{Args: []string{"bash", "-c", "kill -9 $$"}}, "")
		assert.Equal(t, 137, code)
		_, _, code = run(ProcessSpec{Args: []string{"python3", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"}}, "")
		assert.Equal(t, 143, code, "the program does not inherit init's signal handling")
	})
	t.Run("command not found", func(t *testing.T) {
		stdout, stderr, code := run(ProcessSpec{Args: []string{"no-such-command"}}, "")
		assert.Empty(t, stdout)
		if surviveRestore {
			assert.Equal(t, 127, code)
			assert.Contains(t, stderr, "no-such-command: command not found")
		} else {
			// runsc exec's own refusal.
			assert.NotZero(t, code)
			assert.Contains(t, stderr, `"no-such-command"`)
		}
	})
	t.Run("kill kills the group", func(t *testing.T) {
		p, err := r.Exec(ctx, id, ProcessSpec{Args: []string{"bash", "-c", `sleep 1000 & echo $! > /tmp/bg.pid; echo $$ > /tmp/fg.pid; exec sleep 1001`}, SurviveRestore: surviveRestore})
		require.NoError(t, err)
		done := make(chan string, 1)
		go func() {
			stdout, _ := readBoth(t, p)
			done <- stdout
		}()
		require.Eventually(t, func() bool {
			_, err := tryShell(r, id, "test -s /tmp/bg.pid && test -s /tmp/fg.pid")
			return err == nil
		}, 10*time.Second, 20*time.Millisecond)
		pids := strings.Fields(realShell(t, r, id, "cat /tmp/fg.pid /tmp/bg.pid"))
		require.Len(t, pids, 2)
		killCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		require.NoError(t, p.Kill(killCtx))
		assert.Equal(t, 137, waitProc(t, p))
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the output of a killed execution never ended")
		}
		require.Eventually(t, func() bool {
			out, err := tryShell(r, id, fmt.Sprintf("for p in %s %s; do test -e /proc/$p && echo $p; done; true", pids[0], pids[1]))
			return err == nil && out == ""
		}, 5*time.Second, 50*time.Millisecond, "the program or its background job survived kill")
	})
	t.Run("kill -9 -1 kills all but init and the caller", func(t *testing.T) {
		// The relay dies with everything else; the execution goes on and
		// ends with its own code, as when runsc exec ran it directly.
		realShell(t, r, id, `nohup sleep 1000 >/dev/null 2>&1 & echo $! > /tmp/victim.pid`)
		stdout, stderr, code := run(ProcessSpec{Args: []string{"bash", "-c", "kill -9 -1; sleep 0.2; echo sent; exit 4"}}, "")
		assert.Equal(t, "sent\n", stdout, stderr)
		assert.Equal(t, 4, code)
		assert.Equal(t, "gone\n", realShell(t, r, id, `test -e /proc/$(cat /tmp/victim.pid) && echo alive || echo gone`))
	})
	t.Run("kill 1 and orphans", func(t *testing.T) {
		_, _, code := run(ProcessSpec{Args: []string{"bash", "-c", "for s in TERM INT HUP QUIT USR1 USR2 PIPE ALRM CHLD; do kill -$s 1; done"}}, "")
		assert.Equal(t, 0, code)
		// Orphans of finished executions are reaped: no zombie lingers.
		realShell(t, r, id, "for i in 1 2 3; do (sleep 0.1 &) ; done")
		time.Sleep(500 * time.Millisecond)
		out := realShell(t, r, id, `grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null; true`)
		assert.Empty(t, out, "zombies")
		require.NoError(t, r.Alive(ctx, id))
		assert.Equal(t, "ok\n", realShell(t, r, id, "echo ok"))
	})

	require.NoError(t, r.Destroy(ctx, id))
	assertGone(t, r, id)
}

func TestRealRestoreFromSnapshotSandbox(t *testing.T) {
	r := realRunner(t)
	ctx := context.Background()

	src := realID(t, "src")
	require.NoError(t, r.Create(ctx, src, CreateOptions{}))
	realShell(t, r, src, `echo from-snapshot > /root/snap.txt && echo snap-tmp > /tmp/snap.txt && rm /etc/issue`)
	tarPath := filepath.Join(t.TempDir(), "snap.tar")
	require.NoError(t, r.SnapshotFilesystem(ctx, src, tarPath))
	require.NoError(t, r.Destroy(ctx, src))

	// As the pool does: the annotation names an fd of ours that is closed
	// (and the tar removed) once the sandbox runs.
	tarFile, err := os.Open(tarPath)
	require.NoError(t, err)
	fdPath := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), tarFile.Fd())
	child := realID(t, "child")
	err = r.Create(ctx, child, CreateOptions{RootfsTar: fdPath})
	require.NoError(t, tarFile.Close())
	require.NoError(t, err)
	require.NoError(t, os.Remove(tarPath))
	realShell(t, r, child, `echo later > /root/later.txt`)

	img := t.TempDir()
	spec, err := r.Checkpoint(ctx, child, img)
	require.NoError(t, err)
	var checkpointed specs.Spec
	require.NoError(t, json.Unmarshal(spec, &checkpointed))
	assert.Equal(t, fdPath, checkpointed.Annotations[RootfsTarAnnotation])
	require.NoError(t, r.Destroy(ctx, child))

	restored := realID(t, "rest")
	require.NoError(t, r.Restore(ctx, restored, img, spec))
	data, err := os.ReadFile(filepath.Join(r.BundleDir(restored), "config.json"))
	require.NoError(t, err)
	var used specs.Spec
	require.NoError(t, json.Unmarshal(data, &used))
	assert.NotContains(t, used.Annotations, RootfsTarAnnotation)

	assert.Equal(t, "from-snapshot\nsnap-tmp\nlater\nno issue\n",
		realShell(t, r, restored, `cat /root/snap.txt /tmp/snap.txt /root/later.txt; test -e /etc/issue || echo no issue`),
		"the snapshot's files, its deletions and later writes are all back")
	// A restored sandbox can be snapshotted in turn.
	require.NoError(t, r.SnapshotFilesystem(ctx, restored, filepath.Join(t.TempDir(), "again.tar")))

	require.NoError(t, r.Destroy(ctx, restored))
	assertGone(t, r, restored)
}

func TestRealRestoreBadImage(t *testing.T) {
	r := realRunner(t)
	ctx := context.Background()
	id := realID(t, "good")
	require.NoError(t, r.Create(ctx, id, CreateOptions{}))
	good := t.TempDir()
	spec, err := r.Checkpoint(ctx, id, good)
	require.NoError(t, err)
	require.NoError(t, r.Destroy(ctx, id))
	entries, err := os.ReadDir(good)
	require.NoError(t, err)
	require.NotEmpty(t, entries)

	garbage := func(path string) {
		info, err := os.Stat(path)
		require.NoError(t, err)
		b := make([]byte, info.Size())
		for i := range b {
			b[i] = byte(i * 7)
		}
		require.NoError(t, os.WriteFile(path, b, 0o600))
	}
	truncate := func(name string, frac int64) func(string) {
		return func(dir string) {
			path := filepath.Join(dir, name)
			info, err := os.Stat(path)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(path, info.Size()*frac/2))
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(dir string) string // returns the image dir to restore
		ok     bool
	}{
		{"intact copy restores", func(dir string) string { return dir }, true},
		{"missing dir", func(dir string) string { return filepath.Join(dir, "nope") }, false},
		{"empty dir", func(string) string { return t.TempDir() }, false},
		{"a file, not a dir", func(dir string) string { return filepath.Join(dir, "checkpoint.img") }, false},
		{"no state file", func(dir string) string {
			require.NoError(t, os.Remove(filepath.Join(dir, "checkpoint.img")))
			return dir
		}, false},
		{"empty state file", func(dir string) string { truncate("checkpoint.img", 0)(dir); return dir }, false},
		{"half a state file", func(dir string) string { truncate("checkpoint.img", 1)(dir); return dir }, false},
		{"garbage state file", func(dir string) string { garbage(filepath.Join(dir, "checkpoint.img")); return dir }, false},
		{"half the pages", func(dir string) string { truncate("pages.img", 1)(dir); return dir }, false},
		{"garbage pages metadata", func(dir string) string { garbage(filepath.Join(dir, "pages_meta.img")); return dir }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, e := range entries {
				data, err := os.ReadFile(filepath.Join(good, e.Name()))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()), data, 0o600))
			}
			img := tc.mutate(dir)
			rid := realID(t, "bad")

			err := r.Restore(ctx, rid, img, spec)
			if tc.ok {
				require.NoError(t, err)
				assert.Equal(t, "ok\n", realShell(t, r, rid, "echo ok"))
				require.NoError(t, r.Destroy(ctx, rid))
			} else {
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrBadImage)
				assert.Contains(t, err.Error(), rid)
			}
			assertGone(t, r, rid)
		})
	}
}
