package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/cmd/sandpool/load"
)

// `sandpool load` as users run it (the binary, --json), against the real
// server and with --raw-runsc: small runs, so that a broken load tool fails
// `make test` and not only `make bench`.

// loadTimeout bounds one small load run.
const loadTimeout = 3 * time.Minute

// runLoadCommand runs `sandpool load --json args...` and decodes its
// report; exitCode is the command's exit status.
func runLoadCommand(t *testing.T, args ...string) (res load.Result, exitCode int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, serverBinary, append([]string{"load", "--json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		require.NoError(t, err, "sandpool load: %s", stderr.String())
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &res), "report: %s\nstderr: %s", stdout.String(), stderr.String())
	return res, cmd.ProcessState.ExitCode()
}

// requireAllCompleted checks a run that should have had no failure.
func requireAllCompleted(t *testing.T, res load.Result, exitCode, n int) {
	t.Helper()
	require.Zero(t, res.Failed, "errors: %v %v", res.Errors, res.ErrorExamples)
	require.Zero(t, exitCode)
	require.Equal(t, n, res.Completed)
	for _, name := range load.LatencyNames {
		stats := res.Latency[name]
		assert.Equal(t, n, stats.N, name)
		assert.Positive(t, stats.P50, name)
		assert.LessOrEqual(t, stats.P50, stats.Max, name)
	}
	assert.Positive(t, res.Throughput)
}

func TestLoadAgainstTheServer(t *testing.T) {
	s, _ := startSnapshotServer(t)

	res, code := runLoadCommand(t, "--url", s.wsURL(""), "--sandboxes", "6", "--concurrency", "3")
	requireAllCompleted(t, res, code, 6)
	assert.Equal(t, "sandpool", res.Mode)
	assert.Equal(t, 3, res.Concurrency)

	// From a snapshot (the load tool does not judge the code's exit, so
	// the server's log is the proof).
	c, _ := createSandbox(t, s, map[string]any{})
	c.snapshot(t, "load-snap")
	c.killSandbox(t)
	res, code = runLoadCommand(t, "--url", s.wsURL(""), "--sandboxes", "3", "--concurrency", "3",
		"--snapshot", "load-snap", "--language", "python", "--code", "print(1)")
	requireAllCompleted(t, res, code, 3)
	require.True(t, s.log.logged("sandbox created", `"snapshot":"load-snap"`))

	// Every cycle killed its sandbox.
	require.Eventually(t, func() bool {
		ids, err := s.runscList()
		return err == nil && len(ids) == 0
	}, 30*time.Second, 100*time.Millisecond)
}

func TestLoadReportsFailedCyclesByCause(t *testing.T) {
	s, _ := startSnapshotServer(t)

	res, code := runLoadCommand(t, "--url", s.wsURL(""), "--sandboxes", "2", "--snapshot", "no-such-snapshot")
	assert.Equal(t, 1, code, "a run with failed cycles exits 1")
	assert.Zero(t, res.Completed)
	assert.Equal(t, 2, res.Failed)
	assert.Equal(t, map[string]int{"SANDBOX_CREATION_ERROR": 2}, res.Errors)
	assert.Contains(t, res.ErrorExamples["SANDBOX_CREATION_ERROR"], "no-such-snapshot")
}

func TestLoadRawRunsc(t *testing.T) {
	requirePrerequisites(t)
	dir, err := os.MkdirTemp("", "sandpool-e2e-raw-")
	require.NoError(t, err)
	t.Cleanup(func() {
		// Whatever a failed run left: containers, bundles, processes.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = reconcile(ctx, dir)
		for _, p := range processesMentioning(dir) {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
		_ = os.RemoveAll(dir)
	})

	res, code := runLoadCommand(t, "--raw-runsc", "--runsc", runscBinary, "--rootfs", rootfsDir,
		"--raw-state-dir", dir, "--sandboxes", "3", "--concurrency", "2")
	requireAllCompleted(t, res, code, 3)
	assert.Equal(t, "raw-runsc", res.Mode)

	// Every container it made is gone, and none of its processes runs.
	entries, err := os.ReadDir(filepath.Join(dir, "runsc"))
	require.NoError(t, err)
	for _, e := range entries {
		assert.Equal(t, "null-netns", e.Name(), "left in the runsc root")
	}
	assert.Empty(t, processesMentioning(dir))
}
