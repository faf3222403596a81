package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/runsc"
)

// BenchmarkColdPath measures, interleaved in one run, sandpool's cold
// create (/create -> SANDBOX_RUNNING) and `echo hi` (execute -> DONE, in
// a plain sandbox and in one created with enable_checkpoint) against raw
// runsc doing the same work: create+start of the same spec and one `runsc
// exec`. Run: make bench (or go test -run '^$' -bench ColdPath
// -benchtime 30x ./tests/).
func BenchmarkColdPath(b *testing.B) {
	s := startServer(b, "--max-sandboxes", "16", "--checkpoint-path", benchTempDir(b, "sandpool-bench-checkpoints-"))
	raw := newRawRunsc(b)

	var create, rawCreate, execDone, rawExec, execCkpt []time.Duration
	c, _ := createSandbox(b, s, sandboxInit(60))
	defer c.killSandbox(b)
	// Executions of a sandbox that can be checkpointed go through the
	// agent's relay (their background jobs survive a restore).
	ck, _ := createSandbox(b, s, checkpointInit(nil))
	defer ck.killSandbox(b)
	id := raw.start(b, "warm") // a long-lived raw sandbox for exec
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		begin := time.Now()
		nc, _ := createSandbox(b, s, sandboxInit(60))
		create = append(create, time.Since(begin))
		nc.killSandbox(b)

		begin = time.Now()
		rid := raw.start(b, fmt.Sprintf("c%d", i))
		rawCreate = append(rawCreate, time.Since(begin))
		raw.delete(b, rid)

		begin = time.Now()
		res := c.run(b, "bash", "echo hi")
		execDone = append(execDone, time.Since(begin))
		require.Equal(b, "hi\n", res.Stdout)

		begin = time.Now()
		res = ck.run(b, "bash", "echo hi")
		execCkpt = append(execCkpt, time.Since(begin))
		require.Equal(b, "hi\n", res.Stdout)

		begin = time.Now()
		out, err := raw.cmd("exec", id, "bash", "-c", "echo hi").Output()
		rawExec = append(rawExec, time.Since(begin))
		require.NoError(b, err)
		require.Equal(b, "hi\n", string(out))
	}
	b.StopTimer()
	raw.delete(b, id)
	report(b, "create", create, rawCreate)
	report(b, "exec", execDone, rawExec)
	report(b, "exec-checkpointable", execCkpt, rawExec)
}

func report(b *testing.B, name string, ours, raw []time.Duration) {
	if b.N == 1 {
		return // the testing package's probe run, not the measurement
	}
	p50, rp50 := percentile(ours, 50), percentile(raw, 50)
	p99, rp99 := percentile(ours, 99), percentile(raw, 99)
	b.ReportMetric(ms(p50), name+"-p50-ms")
	b.ReportMetric(ms(p99), name+"-p99-ms")
	b.ReportMetric(ms(rp50), name+"-raw-p50-ms")
	b.ReportMetric(ms(rp99), name+"-raw-p99-ms")
	b.ReportMetric(ms(p50)/ms(rp50), name+"-ratio-p50")
	b.Logf("%s: sandpool p50 %.1f ms p99 %.1f ms; raw runsc p50 %.1f ms p99 %.1f ms; ratio %.2fx (n=%d)",
		name, ms(p50), ms(p99), ms(rp50), ms(rp99), ms(p50)/ms(rp50), len(ours))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile is the nearest-rank percentile of samples.
func percentile(samples []time.Duration, p int) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[max(rank, 1)-1]
}

// rawRunsc drives the runsc CLI directly, with the global flags and the
// spec sandpool's runner uses.
type rawRunsc struct {
	runner *runsc.Runner
	dir    string
	bundle string
}

func newRawRunsc(b *testing.B) *rawRunsc {
	dir, err := os.MkdirTemp("", "sandpool-raw-")
	require.NoError(b, err)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := reconcile(ctx, dir)
		assert.NoError(b, err)
		_ = os.RemoveAll(dir)
	})
	runner, err := runsc.New(runsc.Config{Binary: runscBinary, StateDir: dir, Rootfs: rootfsDir})
	require.NoError(b, err)
	r := &rawRunsc{runner: runner, dir: dir}
	r.bundle = r.writeBundle(b, "raw-bundle", runsc.SpecConfig{Rootfs: rootfsDir})
	return r
}

func (r *rawRunsc) cmd(args ...string) *exec.Cmd {
	return exec.Command(runscBinary, append(r.runner.GlobalFlags(), args...)...)
}

// start is create + start of the plain bundle, as a runtime without
// sandpool would do it.
func (r *rawRunsc) start(b *testing.B, name string) string {
	return r.startBundle(b, r.bundle, name)
}

// startBundle is create + start of bundle, with global flags added before
// the subcommand (for example --allow-rootfs-tar-annotation).
func (r *rawRunsc) startBundle(b *testing.B, bundle, name string, flags ...string) string {
	id, err := r.startBundleE(bundle, name, flags...)
	require.NoError(b, err)
	return id
}

// startBundleE is startBundle returning its error (for goroutines).
func (r *rawRunsc) startBundleE(bundle, name string, flags ...string) (string, error) {
	id := fmt.Sprintf("%-32s", name+actors.NewID())[:32]
	// The sandbox inherits create's stdio: a pipe would never reach EOF.
	create := r.cmd(append(flags, "create", "--bundle="+bundle, id)...)
	logFile, err := os.OpenFile(filepath.Join(r.dir, "create.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", err
	}
	defer logFile.Close()
	create.Stdout, create.Stderr = logFile, logFile
	if err := create.Run(); err != nil {
		return "", fmt.Errorf("runsc create: %w; see %s", err, logFile.Name())
	}
	if out, err := r.cmd("start", id).CombinedOutput(); err != nil {
		return id, fmt.Errorf("runsc start: %w: %s", err, out)
	}
	return id, nil
}

// writeBundle makes a bundle named name in the raw runner's directory
// with the spec sandpool's runner would build from cfg.
func (r *rawRunsc) writeBundle(b *testing.B, name string, cfg runsc.SpecConfig) string {
	bundle := filepath.Join(r.dir, name)
	require.NoError(b, os.MkdirAll(bundle, 0o700))
	spec, err := json.Marshal(runsc.BuildSpec(cfg))
	require.NoError(b, err)
	require.NoError(b, os.WriteFile(filepath.Join(bundle, "config.json"), spec, 0o600))
	return bundle
}

func (r *rawRunsc) delete(b *testing.B, id string) {
	require.NoError(b, r.deleteE(id))
}

func (r *rawRunsc) deleteE(id string) error {
	if out, err := r.cmd("delete", "--force", id).CombinedOutput(); err != nil {
		return fmt.Errorf("runsc delete %s: %w: %s", id, err, out)
	}
	return nil
}
