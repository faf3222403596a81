package runsc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/runsc/agent"
)

// Config configures a Runner.
type Config struct {
	// Binary is the absolute path of runsc.
	Binary string
	// StateDir is owned by this runner: runsc's --root and the sandboxes'
	// bundles live under it.
	StateDir string
	// Rootfs is the absolute path of the shared root filesystem.
	Rootfs string
	// Platform is runsc's --platform (default systrap).
	Platform string
	// Network is runsc's --network (default none).
	Network string
	// ExtraFlags are global runsc flags added to every call.
	ExtraFlags []string
	// CallTimeout bounds every runsc call that has no shorter deadline.
	CallTimeout time.Duration
	// OutputDrain is how long output may still arrive after an execution's
	// process exited (an orphan holding the pipe cannot stall the stream).
	OutputDrain time.Duration
}

// Runner is the real Runtime: it runs the runsc CLI.
type Runner struct {
	cfg  Config
	root string
}

var _ Runtime = (*Runner)(nil)

// New checks cfg (the rootfs must hold the sandpool agent) and creates the
// runner's state directories.
func New(cfg Config) (*Runner, error) {
	if !filepath.IsAbs(cfg.Binary) || !filepath.IsAbs(cfg.StateDir) || !filepath.IsAbs(cfg.Rootfs) {
		return nil, fmt.Errorf("runsc: binary, state dir and rootfs must be absolute paths")
	}
	if err := CheckRootfs(cfg.Rootfs); err != nil {
		return nil, err
	}
	if cfg.Platform == "" {
		cfg.Platform = "systrap"
	}
	if cfg.Network == "" {
		cfg.Network = "none"
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.OutputDrain <= 0 {
		cfg.OutputDrain = 250 * time.Millisecond
	}
	r := &Runner{cfg: cfg, root: filepath.Join(cfg.StateDir, "runsc")}
	for _, dir := range []string{r.root, r.bundlesDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("runsc: state dir: %w", err)
		}
	}
	return r, nil
}

// CheckRootfs fails with ErrNoAgent when rootfs lacks the sandpool agent,
// every sandbox's init (a rootfs built before the agent existed).
func CheckRootfs(rootfs string) error {
	path := filepath.Join(rootfs, agent.Path)
	info, err := os.Stat(path)
	if err == nil && (!info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0) {
		err = errors.New("not an executable file")
	}
	if err != nil {
		return fmt.Errorf("runsc: rootfs %s: %w at %s (%v): run `make rootfs` to install it", rootfs, ErrNoAgent, agent.Path, err)
	}
	return nil
}

// Root is runsc's --root directory, the source of truth for what exists.
func (r *Runner) Root() string { return r.root }

func (r *Runner) bundlesDir() string { return filepath.Join(r.cfg.StateDir, "bundles") }

// BundleDir holds a sandbox's config.json and host-side scratch files.
func (r *Runner) BundleDir(id string) string { return filepath.Join(r.bundlesDir(), id) }

// GlobalFlags are the flags every runsc call of this runner carries (a raw
// runsc baseline must use the same).
func (r *Runner) GlobalFlags() []string {
	flags := []string{
		"--root=" + r.root,
		"--platform=" + r.cfg.Platform,
		"--network=" + r.cfg.Network,
		// Each sandbox's writes stay in its own memory, never in the shared
		// rootfs directory (root:self would write filestores there).
		"--overlay2=root:memory",
	}
	return append(flags, r.cfg.ExtraFlags...)
}

func (r *Runner) command(args ...string) *exec.Cmd {
	cmd := exec.Command(r.cfg.Binary, append(r.GlobalFlags(), args...)...)
	// A group of its own, so a deadline kills runsc and every helper it
	// forked, never anything of ours.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// run executes one runsc call with a deadline and returns its stdout; a
// failure carries runsc's stderr.
func (r *Runner) run(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	cmd := r.command(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := startAndWait(ctx, cmd); err != nil {
		return nil, fmt.Errorf("runsc %s: %w: %s", args[0], err, lastLine(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// startAndWait runs cmd, killing its whole process group when ctx ends.
func startAndWait(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return ctx.Err()
	}
}

// lastLine keeps the useful end of runsc's stderr (it logs a lot before the
// actual error).
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	const max = 512
	if len(s) > max {
		s = s[len(s)-max:]
	}
	return s
}

// Create writes the sandbox's bundle and runs it detached. On failure
// nothing is left behind.
func (r *Runner) Create(ctx context.Context, id string, opts CreateOptions) error {
	specCfg := SpecConfig{Rootfs: r.cfg.Rootfs, Env: opts.Env}
	args := []string{"run", "--detach"}
	if opts.RootfsTar != "" {
		specCfg.Annotations = map[string]string{RootfsTarAnnotation: opts.RootfsTar}
		// runsc refuses the annotation unless the caller opts in.
		args = append([]string{"--allow-rootfs-tar-annotation"}, args...)
	}
	config, err := json.Marshal(BuildSpec(specCfg))
	if err != nil {
		return fmt.Errorf("create sandbox %s: %w", id, err)
	}
	callCtx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	out, err := r.launch(callCtx, id, config, args...)
	if err != nil {
		msg := lastLine(out)
		if opts.RootfsTar != "" && ctx.Err() == nil && strings.Contains(msg, "tar") {
			return &RootfsTarError{ID: id, Cause: tarCause(msg)}
		}
		return fmt.Errorf("create sandbox %s: %w: %s", id, err, msg)
	}
	return nil
}

// launch writes sandbox id's bundle with config and runs `runsc <args>
// --bundle=B --pid-file=P id` (run or restore, detached). The sandbox
// inherits runsc's stdio, so a pipe would never reach EOF: runsc's own
// messages go to a log file in the bundle, returned as out on failure. On
// failure nothing is left: the bundle is removed, the container deleted.
func (r *Runner) launch(ctx context.Context, id string, config []byte, args ...string) (out string, err error) {
	var undo cleanupStack
	defer func() {
		if err != nil {
			err = errors.Join(err, undo.run())
		}
	}()
	bundle := r.BundleDir(id)
	if err := os.Mkdir(bundle, 0o700); err != nil {
		return "", fmt.Errorf("bundle: %w", err)
	}
	undo.push(func() error { return os.RemoveAll(bundle) })
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), config, 0o600); err != nil {
		return "", err
	}
	logPath := filepath.Join(bundle, "runsc.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", err
	}
	defer logFile.Close()

	undo.push(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return r.delete(ctx, id)
	})
	// Runs first: runsc killed before it wrote the container's state leaves
	// processes that delete cannot find.
	undo.push(func() error {
		return killBundleProcesses(func(b string) bool { return b == bundle })
	})
	cmd := r.command(append(args, "--bundle="+bundle, "--pid-file="+r.sandboxPIDFile(id), id)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := startAndWait(ctx, cmd); err != nil {
		data, _ := os.ReadFile(logPath)
		sub := args[slices.IndexFunc(args, func(a string) bool { return !strings.HasPrefix(a, "-") })]
		return string(data), fmt.Errorf("runsc %s: %w", sub, err)
	}
	return "", nil
}

// tarCause is the end of runsc's message about a rootfs tar it could not
// restore: runsc dumps the overlay's options ({...}) before the cause.
func tarCause(msg string) string {
	if i := strings.LastIndex(msg, "}: "); i >= 0 {
		return msg[i+len("}: "):]
	}
	return msg
}

// SnapshotFilesystem runs `runsc tar rootfs-upper --file=dest`. Cancelling
// ctx kills the runsc call; the caller removes the partial file.
func (r *Runner) SnapshotFilesystem(ctx context.Context, id, dest string) error {
	if !filepath.IsAbs(dest) {
		return fmt.Errorf("snapshot sandbox %s: destination %q is not absolute", id, dest)
	}
	// A large snapshot may take longer than CallTimeout: ctx bounds it.
	cmd := r.command("tar", "rootfs-upper", "--file="+dest, id)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := startAndWait(ctx, cmd); err != nil {
		return fmt.Errorf("snapshot sandbox %s: runsc tar: %w: %s", id, err, lastLine(stderr.String()))
	}
	return nil
}

// Destroy force-deletes the container and removes its bundle. It is
// idempotent.
func (r *Runner) Destroy(ctx context.Context, id string) error {
	// runsc delete first asks the sandbox for its state, and a sandbox busy
	// serving another call (a large `runsc tar`) answers only when that is
	// done: seconds. Killing its process first makes the answer immediate.
	r.killSandboxProcess(id)
	err := r.delete(ctx, id)
	return errors.Join(err, os.RemoveAll(r.BundleDir(id)))
}

// sandboxPIDFile is where `runsc run` records the sandbox process's PID.
func (r *Runner) sandboxPIDFile(id string) string {
	return filepath.Join(r.BundleDir(id), "sandbox.pid")
}

// killSandboxProcess SIGKILLs the sandbox's runsc-sandbox process, if its
// PID still names that process (never a process that reused the PID).
func (r *Runner) killSandboxProcess(id string) {
	if pid, err := r.sandboxPID(id); err == nil {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// Alive checks the sandbox's runsc-sandbox process in /proc; the gofer and
// the container's processes cannot outlive it.
func (r *Runner) Alive(_ context.Context, id string) error {
	_, err := r.sandboxPID(id)
	return err
}

// sandboxPID is the PID of the sandbox's live runsc-sandbox process. A PID
// reused by another process, or a zombie (whose cmdline is empty), does not
// count.
func (r *Runner) sandboxPID(id string) (int, error) {
	data, err := os.ReadFile(r.sandboxPIDFile(id))
	if err != nil {
		return 0, fmt.Errorf("sandbox %s: no pid file: %w", id, ErrSandboxDead)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("sandbox %s: bad pid file %q: %w", id, data, ErrSandboxDead)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, fmt.Errorf("sandbox %s: process %d: %w", id, pid, ErrSandboxDead)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) < 2 || args[0] != "runsc-sandbox" || args[len(args)-1] != id {
		return 0, fmt.Errorf("sandbox %s: process %d is not its sandbox: %w", id, pid, ErrSandboxDead)
	}
	return pid, nil
}

func (r *Runner) delete(ctx context.Context, id string) error {
	if _, err := r.run(ctx, "delete", "--force", id); err != nil {
		if strings.Contains(err.Error(), "does not exist") || strings.Contains(err.Error(), "not found") {
			return nil
		}
		return fmt.Errorf("destroy sandbox %s: %w", id, err)
	}
	return nil
}

// List returns the ids of every container under the runner's root.
func (r *Runner) List(ctx context.Context) ([]string, error) {
	out, err := r.run(ctx, "list", "--quiet")
	if err != nil {
		return nil, err
	}
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if id := strings.TrimSpace(sc.Text()); id != "" {
			ids = append(ids, id)
		}
	}
	return ids, sc.Err()
}

// Cleanup removes what runsc leaves under the root once every container is
// gone: the nsfs mount of --network=none stays mounted otherwise.
func (r *Runner) Cleanup() error {
	mounts, err := MountsUnder(r.cfg.StateDir)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mounts[i], err))
		}
	}
	return errors.Join(errs...)
}

// MountsUnder lists mount points at or below dir, in mount order (unmount
// them in reverse).
func MountsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func writeJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// execCounter makes the per-execution file names unique within a bundle.
var execCounter atomic.Uint64

func nextExecName() string { return fmt.Sprintf("exec-%d", execCounter.Add(1)) }

// Reconcile deletes every container under the root, every bundle and the
// mounts runsc left: after a crash, nothing of the previous run survives.
func (r *Runner) Reconcile(ctx context.Context) ([]string, error) {
	ids, err := r.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	var errs []error
	for _, id := range ids {
		errs = append(errs, r.delete(ctx, id))
	}
	entries, err := os.ReadDir(r.bundlesDir())
	errs = append(errs, err)
	// A crash during a create leaves processes no container names.
	errs = append(errs, killBundleProcesses(func(b string) bool { return filepath.Dir(b) == r.bundlesDir() }))
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(r.bundlesDir(), e.Name())))
	}
	errs = append(errs, r.Cleanup())
	if err := errors.Join(errs...); err != nil {
		return ids, fmt.Errorf("reconcile: %w", err)
	}
	return ids, nil
}
