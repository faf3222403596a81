package runsc

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runFake reads both outputs concurrently (the fake's pipes are
// synchronous, so an unread stream blocks the handler) and waits.
func runFake(t *testing.T, p Process) (stdout, stderr string, code int) {
	t.Helper()
	var wg sync.WaitGroup
	var errOut []byte
	wg.Add(1)
	go func() {
		defer wg.Done()
		errOut, _ = io.ReadAll(p.Stderr())
	}()
	out, err := io.ReadAll(p.Stdout())
	require.NoError(t, err)
	wg.Wait()
	code, err = p.Wait()
	require.NoError(t, err)
	return string(out), string(errOut), code
}

// waitCode waits for the process's exit code without hanging the test.
func waitCode(t *testing.T, p Process) int {
	t.Helper()
	codes := make(chan int, 1)
	go func() {
		code, _ := p.Wait()
		codes <- code
	}()
	select {
	case code := <-codes:
		return code
	case <-time.After(3 * time.Second):
		t.Fatal("process did not exit")
		return 0
	}
}

func TestFakeRecordsCalls(t *testing.T) {
	ctx := context.Background()
	f := NewFake()

	require.NoError(t, f.Create(ctx, "a", CreateOptions{}))
	p, err := f.Exec(ctx, "a", ProcessSpec{Args: []string{"hi"}})
	require.NoError(t, err)
	runFake(t, p)
	require.NoError(t, f.Destroy(ctx, "a"))

	assert.Equal(t, []string{"create a", "exec a", "destroy a"}, f.Calls())
	// Calls is a copy: callers cannot corrupt the record.
	f.Calls()[0] = "tampered"
	assert.Equal(t, "create a", f.Calls()[0])
}

func TestFakeLiveAndList(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	require.NoError(t, f.Create(ctx, "a", CreateOptions{}))
	require.NoError(t, f.Create(ctx, "b", CreateOptions{}))

	assert.ElementsMatch(t, []string{"a", "b"}, f.Live())
	ids, err := f.List(ctx)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"a", "b"}, ids)

	require.NoError(t, f.Destroy(ctx, "a"))
	assert.Equal(t, []string{"b"}, f.Live())
	// Destroying what is gone is not an error, as for the real runtime.
	require.NoError(t, f.Destroy(ctx, "a"))
}

func TestFakeCreateDuplicateFails(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	require.NoError(t, f.Create(ctx, "a", CreateOptions{}))
	err := f.Create(ctx, "a", CreateOptions{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already exists")
}

func TestFakeMaxConcurrentCreates(t *testing.T) {
	const n = 5
	ctx := context.Background()
	f := NewFake()
	// CreateErr runs while a creation is in flight: holding every creation
	// there until all have arrived makes the overlap certain.
	var arrived sync.WaitGroup
	arrived.Add(n)
	f.CreateErr = func(string) error {
		arrived.Done()
		arrived.Wait()
		return nil
	}

	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, f.Create(ctx, string(rune('a'+i)), CreateOptions{}))
		}()
	}
	wg.Wait()
	assert.Equal(t, n, f.MaxConcurrentCreates())

	// Later sequential creations do not lower the high-water mark.
	f.CreateErr = nil
	require.NoError(t, f.Create(ctx, "z", CreateOptions{}))
	assert.Equal(t, n, f.MaxConcurrentCreates())
}

func TestFakeSequentialCreatesDoNotOverlap(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	for _, id := range []string{"a", "b", "c"} {
		require.NoError(t, f.Create(ctx, id, CreateOptions{}))
	}
	assert.Equal(t, 1, f.MaxConcurrentCreates())
}

func TestFakeCreateErr(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	boom := errors.New("boom")
	f.CreateErr = func(id string) error {
		if id == "bad" {
			return boom
		}
		return nil
	}

	require.ErrorIs(t, f.Create(ctx, "bad", CreateOptions{}), boom)
	require.NoError(t, f.Create(ctx, "good", CreateOptions{}))
	assert.Equal(t, []string{"good"}, f.Live(), "a failed creation leaves nothing")
	assert.Equal(t, []string{"create bad", "create good"}, f.Calls())
}

func TestFakeCreateDelayHonoursContext(t *testing.T) {
	f := NewFake()
	f.CreateDelay = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f.Create(ctx, "a", CreateOptions{}) }()
	// The creation is in flight once it is recorded.
	require.Eventually(t, func() bool { return len(f.Calls()) == 1 }, 2*time.Second, time.Millisecond)
	cancel()

	select {
	case err := <-errc:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(3 * time.Second):
		t.Fatal("Create ignored its context")
	}
	assert.Empty(t, f.Live())
}

func TestFakeExecUnknownSandbox(t *testing.T) {
	f := NewFake()
	_, err := f.Exec(context.Background(), "nope", ProcessSpec{Args: []string{"x"}})
	require.ErrorIs(t, err, ErrNotFound)
	assert.Contains(t, err.Error(), "nope")
}

func TestFakeDestroyKillsRunningProcesses(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	require.NoError(t, f.Create(ctx, "a", CreateOptions{}))
	p1, err := f.Exec(ctx, "a", ProcessSpec{Args: []string{"sleep"}})
	require.NoError(t, err)
	p2, err := f.Exec(ctx, "a", ProcessSpec{Args: []string{"sleep"}})
	require.NoError(t, err)

	require.NoError(t, f.Destroy(ctx, "a"))
	assert.Equal(t, 137, waitCode(t, p1))
	assert.Equal(t, 137, waitCode(t, p2))

	_, err = f.Exec(ctx, "a", ProcessSpec{Args: []string{"x"}})
	assert.ErrorIs(t, err, ErrNotFound, "a destroyed sandbox runs nothing")
}

func TestFakeHandlerOverride(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	var got FakeExec
	f.Handler = func(e FakeExec) int {
		got = e
		_, _ = io.WriteString(e.Stdout, "custom")
		return 7
	}
	require.NoError(t, f.Create(ctx, "a", CreateOptions{}))
	spec := ProcessSpec{Args: []string{"python3", "-c", "x"}, Env: []string{"A=1"}, Cwd: "/tmp"}
	p, err := f.Exec(ctx, "a", spec)
	require.NoError(t, err)

	stdout, _, code := runFake(t, p)
	assert.Equal(t, "custom", stdout)
	assert.Equal(t, 7, code)
	assert.Equal(t, spec, got.Spec) // written before Wait returned
}

func TestDefaultFakeHandler(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		wantStdout string
		wantStderr string
		wantCode   int
	}{
		{name: "echo", args: []string{"python3", "-c", "hello"}, wantStdout: "hello"},
		{name: "no args", args: nil},
		{name: "exit", args: []string{"exit 3"}, wantCode: 3},
		{name: "exit zero", args: []string{"exit 0"}},
		{name: "stderr", args: []string{"stderr oops"}, wantStderr: "oops"},
		{name: "cat", args: []string{"cat"}, stdin: "abc\ndef", wantStdout: "abc\ndef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := NewFake()
			require.NoError(t, f.Create(ctx, "a", CreateOptions{}))
			p, err := f.Exec(ctx, "a", ProcessSpec{Args: tc.args})
			require.NoError(t, err)
			go func() {
				_, _ = io.WriteString(p.Stdin(), tc.stdin)
				_ = p.Stdin().Close()
			}()

			stdout, stderr, code := runFake(t, p)
			assert.Equal(t, tc.wantStdout, stdout)
			assert.Equal(t, tc.wantStderr, stderr)
			assert.Equal(t, tc.wantCode, code)
		})
	}
}

func TestDefaultFakeHandlerKill(t *testing.T) {
	for _, code := range []string{"sleep", "cat"} {
		t.Run(code, func(t *testing.T) {
			ctx := context.Background()
			f := NewFake()
			require.NoError(t, f.Create(ctx, "a", CreateOptions{}))
			p, err := f.Exec(ctx, "a", ProcessSpec{Args: []string{code}})
			require.NoError(t, err)

			require.NoError(t, p.Kill(ctx))
			require.NoError(t, p.Kill(ctx), "kill is idempotent")
			assert.Equal(t, 137, waitCode(t, p))
			// The outputs end with the process.
			out, err := io.ReadAll(p.Stdout())
			require.NoError(t, err)
			assert.Empty(t, out)
		})
	}
}

func TestFakeCrash(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	require.NoError(t, f.Create(ctx, "a", CreateOptions{}))
	p, err := f.Exec(ctx, "a", ProcessSpec{Args: []string{"sleep"}})
	require.NoError(t, err)
	require.NoError(t, f.Alive(ctx, "a"))

	f.Crash("a")
	assert.ErrorIs(t, f.Alive(ctx, "a"), ErrSandboxDead)
	assert.Equal(t, 137, waitCode(t, p), "its processes die with it")
	assert.Contains(t, f.Live(), "a", "it exists until destroyed")
	assert.ErrorIs(t, f.Alive(ctx, "unknown"), ErrSandboxDead)
	assert.NotContains(t, f.Calls(), "alive a", "Alive is not a runsc call")
}

// fakeSnapshotSandbox creates sandbox id from a fake snapshot with content.
func fakeSnapshotSandbox(t *testing.T, f *Fake, id, content string) {
	t.Helper()
	tar := filepath.Join(t.TempDir(), "snap.tar")
	require.NoError(t, os.WriteFile(tar, []byte(FakeSnapshotPrefix+content), 0o600))
	require.NoError(t, f.Create(context.Background(), id, CreateOptions{RootfsTar: tar}))
}

func TestFakeCheckpointRestoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	fakeSnapshotSandbox(t, f, "a", "files of a\n")
	rootfs := f.Rootfs("a")
	p, err := f.Exec(ctx, "a", ProcessSpec{Args: []string{"sleep"}})
	require.NoError(t, err)

	img := t.TempDir()
	spec, err := f.Checkpoint(ctx, "a", img)
	require.NoError(t, err)
	assert.NotEmpty(t, spec)
	assert.FileExists(t, filepath.Join(img, FakeImageFile))
	assert.ErrorIs(t, f.Alive(ctx, "a"), ErrSandboxDead, "a checkpoint stops the sandbox")
	assert.Equal(t, 137, waitCode(t, p), "its processes stop with it")
	assert.Contains(t, f.Live(), "a", "it exists until destroyed")
	require.NoError(t, f.Destroy(ctx, "a"))

	// The same id and others come back, as often as wanted.
	for _, id := range []string{"a", "b"} {
		require.NoError(t, f.Restore(ctx, id, img, spec))
		require.NoError(t, f.Alive(ctx, id))
		assert.Equal(t, rootfs, f.Rootfs(id), "the files come back")
		out, _, code := runFake(t, mustExec(t, f, id, "hello"))
		assert.Equal(t, "hello", out)
		assert.Equal(t, 0, code)
	}
	assert.Equal(t, []string{"create a from SNAP", "exec a", "checkpoint a", "destroy a", "restore a", "exec a", "restore b", "exec b"},
		replaceSnapPath(f.Calls()))

	assert.Error(t, f.Restore(ctx, "b", img, spec), "b exists")
	assert.Error(t, f.Restore(ctx, "c", img, []byte(`{"other":"spec"}`)))
}

func mustExec(t *testing.T, f *Fake, id, code string) Process {
	t.Helper()
	p, err := f.Exec(context.Background(), id, ProcessSpec{Args: []string{code}})
	require.NoError(t, err)
	return p
}

// replaceSnapPath hides the temp path of "create ID from PATH" calls.
func replaceSnapPath(calls []string) []string {
	out := make([]string, len(calls))
	for i, c := range calls {
		if j := strings.Index(c, " from "); j >= 0 {
			c = c[:j] + " from SNAP"
		}
		out[i] = c
	}
	return out
}

func TestFakeCheckpointBaseSandbox(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	require.NoError(t, f.Create(ctx, "a", CreateOptions{}))
	img := t.TempDir()
	spec, err := f.Checkpoint(ctx, "a", img)
	require.NoError(t, err)
	require.NoError(t, f.Restore(ctx, "b", img, spec))
	assert.Nil(t, f.Rootfs("b"), "a sandbox of the base rootfs restores as one")
}

func TestFakeRestoreBadImage(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	require.NoError(t, f.Create(ctx, "a", CreateOptions{}))
	good := t.TempDir()
	spec, err := f.Checkpoint(ctx, "a", good)
	require.NoError(t, err)

	for _, tc := range []struct {
		name  string
		image func() string
	}{
		{"missing dir", func() string { return filepath.Join(t.TempDir(), "nope") }},
		{"empty dir", func() string { return t.TempDir() }},
		{"corrupt image", func() string {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, FakeImageFile), []byte("garbage"), 0o600))
			return dir
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := f.Restore(ctx, "r", tc.image(), spec)
			assert.ErrorIs(t, err, ErrBadImage)
			assert.NotContains(t, f.Live(), "r", "nothing is left")
		})
	}
}

func TestFakeCheckpointFailures(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	_, err := f.Checkpoint(ctx, "unknown", t.TempDir())
	assert.ErrorIs(t, err, ErrNotFound)

	require.NoError(t, f.Create(ctx, "dead", CreateOptions{}))
	f.Crash("dead")
	_, err = f.Checkpoint(ctx, "dead", t.TempDir())
	assert.ErrorIs(t, err, ErrSandboxDead)

	// A refused checkpoint leaves the sandbox running.
	boom := errors.New("boom")
	f.CheckpointErr = boom
	require.NoError(t, f.Create(ctx, "a", CreateOptions{}))
	_, err = f.Checkpoint(ctx, "a", t.TempDir())
	assert.ErrorIs(t, err, boom)
	assert.NoError(t, f.Alive(ctx, "a"))

	// A slow checkpoint honours its context.
	f.CheckpointErr = nil
	f.CheckpointDelay = time.Minute
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = f.Checkpoint(cctx, "a", t.TempDir())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NoError(t, f.Alive(ctx, "a"))
}
