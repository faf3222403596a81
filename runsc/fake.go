package runsc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FakeExec is what a Fake handler sees of one execution.
type FakeExec struct {
	Spec   ProcessSpec
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Killed is closed by Process.Kill or by destroying the sandbox.
	Killed <-chan struct{}
}

// Fake is an in-memory Runtime for unit tests. It records calls, counts
// concurrent creations, and runs executions with Handler.
type Fake struct {
	// CreateDelay makes Create take this long (cancelled by its context).
	CreateDelay time.Duration
	// ExecDelay makes Exec take this long before the process starts.
	ExecDelay time.Duration
	// CreateErr, when set, decides whether a Create fails.
	CreateErr func(id string) error
	// SnapshotDelay makes SnapshotFilesystem take this long (cancelled by
	// its context) after it wrote the first half of the file.
	SnapshotDelay time.Duration
	// SnapshotErr, when set, makes SnapshotFilesystem fail after writing.
	SnapshotErr error
	// CheckpointErr, when set, makes Checkpoint fail (the sandbox keeps
	// running, as when runsc refuses).
	CheckpointErr error
	// CheckpointDelay makes Checkpoint take this long (cancelled by its
	// context).
	CheckpointDelay time.Duration
	// Handler runs an execution and returns its exit code; nil means
	// DefaultFakeHandler.
	Handler func(FakeExec) int

	mu          sync.Mutex
	calls       []string
	sandboxes   map[string]*fakeSandbox
	creating    int
	maxCreating int
}

var _ Runtime = (*Fake)(nil)

// fakeSandbox is one live fake sandbox.
type fakeSandbox struct {
	procs map[*fakeProcess]struct{}
	// rootfs is the content of the snapshot it was created from.
	rootfs []byte
	// dead is set by Crash: the sandbox's processes are gone.
	dead bool
}

// FakeSnapshotPrefix starts every file the fake's SnapshotFilesystem
// writes; a RootfsTar without it fails to restore, like a corrupt tar.
const FakeSnapshotPrefix = "fake rootfs-upper\n"

// NewFake returns an empty fake runtime.
func NewFake() *Fake { return &Fake{sandboxes: map[string]*fakeSandbox{}} }

func (f *Fake) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// Calls returns every call made so far, like "create ID" or "exec ID".
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// MaxConcurrentCreates is the most creations that were ever in flight.
func (f *Fake) MaxConcurrentCreates() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxCreating
}

// Live returns the ids of the sandboxes that exist.
func (f *Fake) Live() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.sandboxes))
	for id := range f.sandboxes {
		ids = append(ids, id)
	}
	return ids
}

func (f *Fake) Create(ctx context.Context, id string, opts CreateOptions) error {
	f.mu.Lock()
	if opts.RootfsTar != "" {
		f.record("create %s from %s", id, opts.RootfsTar)
	} else {
		f.record("create %s", id)
	}
	f.creating++
	f.maxCreating = max(f.maxCreating, f.creating)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.creating--
		f.mu.Unlock()
	}()
	if f.CreateDelay > 0 {
		select {
		case <-time.After(f.CreateDelay):
		case <-ctx.Done():
			return fmt.Errorf("create sandbox %s: %w", id, ctx.Err())
		}
	}
	if f.CreateErr != nil {
		if err := f.CreateErr(id); err != nil {
			return err
		}
	}
	sb := &fakeSandbox{procs: map[*fakeProcess]struct{}{}}
	if opts.RootfsTar != "" {
		data, err := os.ReadFile(opts.RootfsTar)
		if err != nil {
			return fmt.Errorf("create sandbox %s: %w", id, err)
		}
		if !bytes.HasPrefix(data, []byte(FakeSnapshotPrefix)) {
			return &RootfsTarError{ID: id, Cause: "not a fake snapshot"}
		}
		sb.rootfs = data
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sandboxes[id]; ok {
		return fmt.Errorf("create sandbox %s: already exists", id)
	}
	f.sandboxes[id] = sb
	return nil
}

// Rootfs is the snapshot content sandbox id was created from (nil for the
// base rootfs or an unknown id).
func (f *Fake) Rootfs(id string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sb, ok := f.sandboxes[id]; ok {
		return sb.rootfs
	}
	return nil
}

// SnapshotFilesystem writes FakeSnapshotPrefix, the sandbox id, then the
// snapshot the sandbox came from, so chains are visible in the content.
func (f *Fake) SnapshotFilesystem(ctx context.Context, id, dest string) error {
	f.mu.Lock()
	f.record("snapshot %s", id)
	sb, ok := f.sandboxes[id]
	var content []byte
	if ok {
		content = append([]byte(FakeSnapshotPrefix+"sandbox "+id+"\n"), sb.rootfs...)
	}
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("snapshot sandbox %s: %w", id, ErrNotFound)
	}
	file, err := os.OpenFile(dest, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	defer file.Close()
	half := len(content) / 2
	if _, err := file.Write(content[:half]); err != nil {
		return err
	}
	if f.SnapshotDelay > 0 {
		select {
		case <-time.After(f.SnapshotDelay):
		case <-ctx.Done():
			return fmt.Errorf("snapshot sandbox %s: %w", id, ctx.Err())
		}
	}
	if _, err := file.Write(content[half:]); err != nil {
		return err
	}
	if f.SnapshotErr != nil {
		return fmt.Errorf("snapshot sandbox %s: %w", id, f.SnapshotErr)
	}
	return nil
}

func (f *Fake) Exec(_ context.Context, id string, spec ProcessSpec) (Process, error) {
	time.Sleep(f.ExecDelay) // a slow `runsc exec` start
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("exec %s", id)
	sb, ok := f.sandboxes[id]
	if !ok {
		return nil, fmt.Errorf("exec in sandbox %s: %w", id, ErrNotFound)
	}
	p := newFakeProcess()
	sb.procs[p] = struct{}{}
	handler := f.Handler
	if handler == nil {
		handler = DefaultFakeHandler
	}
	go func() {
		code := handler(FakeExec{Spec: spec, Stdin: p.stdinR, Stdout: p.stdoutW, Stderr: p.stderrW, Killed: p.killed})
		_ = p.stdoutW.Close()
		_ = p.stderrW.Close()
		_ = p.stdinR.Close()
		f.mu.Lock()
		if sb, ok := f.sandboxes[id]; ok {
			delete(sb.procs, p)
		}
		f.mu.Unlock()
		p.exit <- code
	}()
	return p, nil
}

func (f *Fake) Destroy(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("destroy %s", id)
	if sb, ok := f.sandboxes[id]; ok {
		for p := range sb.procs {
			p.kill()
		}
	}
	delete(f.sandboxes, id)
	return nil
}

func (f *Fake) List(context.Context) ([]string, error) { return f.Live(), nil }

// Alive fails for an unknown or crashed sandbox. It is not recorded in
// Calls: it stands for a /proc read, not a runsc command.
func (f *Fake) Alive(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sb, ok := f.sandboxes[id]; !ok || sb.dead {
		return fmt.Errorf("sandbox %s: %w", id, ErrSandboxDead)
	}
	return nil
}

// Crash makes a sandbox die as if its runsc-sandbox process were killed: it
// still exists (until destroyed), its processes are killed, Alive fails.
func (f *Fake) Crash(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sb, ok := f.sandboxes[id]; ok {
		sb.dead = true
		for p := range sb.procs {
			p.kill()
		}
	}
}

// FakeImageFile is the file the fake's Checkpoint writes into the image
// directory; it starts with FakeImagePrefix.
const (
	FakeImageFile   = "fake-checkpoint.img"
	FakeImagePrefix = "fake checkpoint\n"
)

// fakeSpec is the OCI spec every fake sandbox has.
var fakeSpec = []byte(`{"ociVersion":"fake"}`)

// Checkpoint writes the sandbox's rootfs content into imageDir and stops
// it: its processes are killed, Alive fails, it exists until destroyed.
func (f *Fake) Checkpoint(ctx context.Context, id, imageDir string) ([]byte, error) {
	f.mu.Lock()
	f.record("checkpoint %s", id)
	sb, ok := f.sandboxes[id]
	var content []byte
	if ok && !sb.dead {
		content = append([]byte(FakeImagePrefix), sb.rootfs...)
	}
	f.mu.Unlock()
	switch {
	case !ok:
		return nil, fmt.Errorf("checkpoint sandbox %s: %w", id, ErrNotFound)
	case content == nil:
		return nil, fmt.Errorf("checkpoint sandbox %s: %w", id, ErrSandboxDead)
	}
	if f.CheckpointDelay > 0 {
		select {
		case <-time.After(f.CheckpointDelay):
		case <-ctx.Done():
			return nil, fmt.Errorf("checkpoint sandbox %s: %w", id, ctx.Err())
		}
	}
	if f.CheckpointErr != nil {
		return nil, fmt.Errorf("checkpoint sandbox %s: %w", id, f.CheckpointErr)
	}
	if err := os.WriteFile(filepath.Join(imageDir, FakeImageFile), content, 0o600); err != nil {
		return nil, fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	f.Crash(id)
	return append([]byte(nil), fakeSpec...), nil
}

// Restore brings back a sandbox from a fake image: its rootfs content is
// the checkpointed one.
func (f *Fake) Restore(_ context.Context, id, imageDir string, spec []byte) error {
	f.mu.Lock()
	f.record("restore %s", id)
	f.mu.Unlock()
	if !bytes.Equal(spec, fakeSpec) {
		return fmt.Errorf("restore sandbox %s: spec %q is not the checkpointed one", id, spec)
	}
	data, err := os.ReadFile(filepath.Join(imageDir, FakeImageFile))
	if err != nil || !bytes.HasPrefix(data, []byte(FakeImagePrefix)) {
		return fmt.Errorf("restore sandbox %s: %w (%v)", id, ErrBadImage, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sandboxes[id]; ok {
		return fmt.Errorf("restore sandbox %s: already exists", id)
	}
	rootfs := data[len(FakeImagePrefix):]
	if len(rootfs) == 0 {
		rootfs = nil
	}
	f.sandboxes[id] = &fakeSandbox{procs: map[*fakeProcess]struct{}{}, rootfs: rootfs}
	return nil
}

// DefaultFakeHandler interprets the last argument (the code): "sleep" blocks
// until killed, "cat" copies stdin to stdout, "exit N" exits with N,
// "stderr X" writes X to stderr, anything else is echoed to stdout.
func DefaultFakeHandler(e FakeExec) int {
	code := ""
	if len(e.Spec.Args) > 0 {
		code = e.Spec.Args[len(e.Spec.Args)-1]
	}
	switch {
	case code == "sleep":
		<-e.Killed
		return 137
	case code == "cat":
		done := make(chan struct{})
		go func() { _, _ = io.Copy(e.Stdout, e.Stdin); close(done) }()
		select {
		case <-done:
			return 0
		case <-e.Killed:
			return 137
		}
	case strings.HasPrefix(code, "exit "):
		n, _ := strconv.Atoi(strings.TrimPrefix(code, "exit "))
		return n
	case strings.HasPrefix(code, "stderr "):
		_, _ = io.WriteString(e.Stderr, strings.TrimPrefix(code, "stderr "))
		return 0
	default:
		_, _ = io.WriteString(e.Stdout, code)
		return 0
	}
}

type fakeProcess struct {
	stdinR           *io.PipeReader
	stdinW           *io.PipeWriter
	stdoutR, stderrR *io.PipeReader
	stdoutW, stderrW *io.PipeWriter
	killed           chan struct{}
	killOnce         sync.Once
	exit             chan int
}

func newFakeProcess() *fakeProcess {
	p := &fakeProcess{killed: make(chan struct{}), exit: make(chan int, 1)}
	p.stdinR, p.stdinW = io.Pipe()
	p.stdoutR, p.stdoutW = io.Pipe()
	p.stderrR, p.stderrW = io.Pipe()
	return p
}

func (p *fakeProcess) kill() { p.killOnce.Do(func() { close(p.killed) }) }

func (p *fakeProcess) Stdin() io.WriteCloser { return p.stdinW }
func (p *fakeProcess) Stdout() io.Reader     { return p.stdoutR }
func (p *fakeProcess) Stderr() io.Reader     { return p.stderrR }
func (p *fakeProcess) Wait() (int, error)    { return <-p.exit, nil }
func (p *fakeProcess) Kill(context.Context) error {
	p.kill()
	return nil
}
