package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sandpool/sandpool/runsc"
)

// RawConfig is the runsc the raw baseline drives directly, with the spec and
// global flags sandpool's runner uses for the same rootfs.
type RawConfig struct {
	Binary string
	Rootfs string
	// StateDir holds the runsc root and the bundle; a temporary directory
	// (removed afterwards) when empty.
	StateDir string
}

// rawCycler runs create+start, exec and delete with the runsc CLI: the
// floor any server built on runsc pays for the same work.
type rawCycler struct {
	cfg      Config
	runner   *runsc.Runner
	binary   string
	dir      string
	ownDir   bool
	bundle   string
	logFile  *os.File
	seq      atomic.Int64
	mu       sync.Mutex
	live     map[string]bool // created and not yet deleted
	language []string
}

func newRawCycler(raw RawConfig, cfg Config) (*rawCycler, error) {
	if cfg.Snapshot != "" {
		return nil, errors.New("--snapshot is not supported with --raw-runsc")
	}
	// New has checked the language.
	argv := map[string][]string{"python": {"python3", "-c"}, "bash": {"bash", "-c"}}[cfg.Language]
	binary, err := runsc.FindBinary(raw.Binary)
	if err == nil {
		binary, err = filepath.Abs(binary)
	}
	if err == nil {
		raw.Rootfs, err = filepath.Abs(raw.Rootfs)
	}
	if err == nil && raw.StateDir != "" {
		raw.StateDir, err = filepath.Abs(raw.StateDir)
	}
	if err != nil {
		return nil, err
	}
	r := &rawCycler{cfg: cfg, binary: binary, dir: raw.StateDir, live: map[string]bool{}, language: argv}
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "sandpool-load-raw-"); err != nil {
			return nil, err
		}
		r.ownDir = true
	}
	cleanup := func(err error) (*rawCycler, error) {
		if r.ownDir {
			_ = os.RemoveAll(r.dir)
		}
		return nil, err
	}
	if r.runner, err = runsc.New(runsc.Config{Binary: binary, StateDir: r.dir, Rootfs: raw.Rootfs}); err != nil {
		return cleanup(err)
	}
	r.bundle = filepath.Join(r.dir, "load-bundle")
	spec, err := json.Marshal(runsc.BuildSpec(runsc.SpecConfig{Rootfs: raw.Rootfs}))
	if err == nil {
		err = os.MkdirAll(r.bundle, 0o700)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(r.bundle, "config.json"), spec, 0o600)
	}
	if err == nil {
		// The sandbox inherits create's stdio; a pipe would never reach EOF.
		r.logFile, err = os.OpenFile(filepath.Join(r.dir, "runsc.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	}
	if err != nil {
		return cleanup(fmt.Errorf("raw bundle: %w", err))
	}
	return r, nil
}

func (r *rawCycler) mode() string   { return "raw-runsc" }
func (r *rawCycler) target() string { return r.binary }

func (r *rawCycler) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.binary, append(r.runner.GlobalFlags(), args...)...)
	// A timed-out runsc is killed with its children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

func (r *rawCycler) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.cfg.StepTimeout)
}

func (r *rawCycler) cycle(ctx context.Context) (sample, error) {
	var s sample
	// Fixed width: runsc also accepts a unique prefix of an id, so "x-1"
	// would be ambiguous once "x-10" exists.
	id := fmt.Sprintf("load%d-%09d", os.Getpid(), r.seq.Add(1))
	begin := time.Now()

	sctx, cancel := r.step(ctx)
	create := r.command(sctx, "create", "--bundle="+r.bundle, id)
	create.Stdout, create.Stderr = r.logFile, r.logFile
	r.track(id, true)
	err := create.Run()
	if err == nil {
		var out []byte
		out, err = r.command(sctx, "start", id).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
		}
	}
	cancel()
	defer r.delete(id)
	if err != nil {
		return s, r.stepError("create", sctx, err)
	}
	s.create = time.Since(begin)

	sctx, cancel = r.step(ctx)
	defer cancel()
	execStart := time.Now()
	cmd := r.command(sctx, append([]string{"exec", id}, append(r.language, r.cfg.Code)...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return s, err
	}
	cmd.Stderr = cmd.Stdout // merged, as the first output of either stream counts
	if err := cmd.Start(); err != nil {
		return s, r.stepError("execute", sctx, err)
	}
	buf := make([]byte, 32<<10)
	for {
		n, rerr := stdout.Read(buf)
		if n > 0 && s.firstOutput == 0 {
			s.firstOutput = time.Since(execStart)
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) && !errors.Is(rerr, os.ErrClosed) {
				err = rerr
			}
			break
		}
	}
	if werr := cmd.Wait(); werr != nil {
		var exit *exec.ExitError
		// A non-zero exit of the code is not a failure, as on the server.
		if !errors.As(werr, &exit) || sctx.Err() != nil || exit.ExitCode() < 0 {
			err = werr
		}
	}
	if err != nil {
		return s, r.stepError("execute", sctx, err)
	}
	s.done = time.Since(execStart)

	if err := r.delete(id); err != nil {
		return s, &StepError{Step: "kill", Kind: "runsc", Err: err}
	}
	s.total = time.Since(begin)
	return s, nil
}

func (r *rawCycler) stepError(step string, ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &StepError{Step: step, Kind: "timeout", Err: err}
	}
	return &StepError{Step: step, Kind: "runsc", Err: err}
}

func (r *rawCycler) track(id string, live bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if live {
		r.live[id] = true
	} else {
		delete(r.live, id)
	}
}

// delete removes a container once; a second call is a no-op.
func (r *rawCycler) delete(id string) error {
	r.mu.Lock()
	live := r.live[id]
	r.mu.Unlock()
	if !live {
		return nil
	}
	ctx, cancel := r.step(context.Background())
	defer cancel()
	out, err := r.command(ctx, "delete", "--force", id).CombinedOutput()
	if err != nil {
		return fmt.Errorf("runsc delete %s: %w: %s", id, err, bytes.TrimSpace(out))
	}
	r.track(id, false)
	return nil
}

// close deletes what failed deletes left, with the runner's reconciliation,
// and removes a temporary state dir.
func (r *rawCycler) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := r.runner.Reconcile(ctx)
	r.logFile.Close()
	if r.ownDir {
		if rmErr := os.RemoveAll(r.dir); rmErr != nil && err == nil {
			err = rmErr
		}
	}
	return err
}
