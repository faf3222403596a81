package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/cmd/sandpool/load"
)

// The scale scenarios of `make bench` (issue: throughput, density, churn and
// crash hygiene). Each runs its scenario once whatever b.N is: run them with
// -benchtime 1x. Each prints one line "scenario: <name>: <value> <unit>
// (<ratio> vs raw runsc)" that tests/bench.sh collects, and writes its raw
// numbers as JSON into $BENCH_JSON_DIR when set.

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// scenario prints a scenario's one-line result.
func scenario(b *testing.B, name, format string, args ...any) {
	b.Logf("scenario: %s: %s", name, fmt.Sprintf(format, args...))
}

// saveJSON writes v as $BENCH_JSON_DIR/<name>.json.
func saveJSON(b *testing.B, name string, v any) {
	dir := os.Getenv("BENCH_JSON_DIR")
	if dir == "" {
		return
	}
	raw, err := json.MarshalIndent(v, "", "  ")
	require.NoError(b, err)
	require.NoError(b, os.WriteFile(filepath.Join(dir, name+".json"), raw, 0o644))
}

// runLoad runs one load (sandpool when raw is nil, else raw runsc).
func runLoad(b *testing.B, cfg load.Config) load.Result {
	r, err := load.New(cfg)
	require.NoError(b, err)
	res, err := r.Run(context.Background())
	require.NoError(b, err)
	if res.Failed > 0 {
		b.Fatalf("%d failed cycles: %v %v", res.Failed, res.Errors, res.ErrorExamples)
	}
	return res
}

// BenchmarkThroughput: N sandboxes (default 200, BENCH_SANDBOXES)
// create -> execute `echo hi` -> kill at concurrency 1, 4 and 16, through
// sandpool (the `make run` config: 2 warm base sandboxes, 2 creations at
// once) and with the runsc CLI at the same concurrency, in one run.
func BenchmarkThroughput(b *testing.B) {
	n := envInt("BENCH_SANDBOXES", 200)
	s := startServer(b, "--config", filepath.Join(repoRoot, "cmd/sandpool/sandpool.yaml"), "--max-sandboxes", "200")
	results := map[string]load.Result{}
	for _, c := range []int{1, 4, 16} {
		s.waitWarm(b, "@base", 2)
		ours := runLoad(b, load.Config{URL: s.wsURL(""), Sandboxes: n, Concurrency: c})
		raw := runLoad(b, load.Config{Sandboxes: n, Concurrency: c, Raw: &load.RawConfig{Binary: runscBinary, Rootfs: rootfsDir}})
		results[fmt.Sprintf("sandpool-c%d", c)], results[fmt.Sprintf("raw-c%d", c)] = ours, raw
		scenario(b, fmt.Sprintf("throughput-c%d", c), "%.2f sandboxes/s (%.2fx raw runsc's %.2f/s); end to end p50 %.0f ms p99 %.0f ms vs raw %.0f / %.0f ms",
			ours.Throughput, ours.Throughput/raw.Throughput, raw.Throughput,
			ours.Latency["total"].P50, ours.Latency["total"].P99, raw.Latency["total"].P50, raw.Latency["total"].P99)
	}
	saveJSON(b, "throughput", results)
}

// hygiene is what a server holds on the host, counted from outside.
type hygiene struct {
	RunscProcesses int `json:"runsc_processes"`
	Mounts         int `json:"mounts"`
	StateDirs      int `json:"state_dirs"`
	ServerFDs      int `json:"server_fds"`
	Goroutines     int `json:"goroutines"`
	Containers     int `json:"containers"`
}

func (h hygiene) String() string {
	return fmt.Sprintf("runsc processes %d, containers %d, mounts %d, state dirs %d, server fds %d, goroutines %d",
		h.RunscProcesses, h.Containers, h.Mounts, h.StateDirs, h.ServerFDs, h.Goroutines)
}

// measureHygiene counts the server's runsc processes (by its state dir on
// their command line), mounts under its state dir, bundle and runsc-root
// entries, its open fds and goroutines (from /metrics).
func measureHygiene(b *testing.B, s *server) hygiene {
	var h hygiene
	h.RunscProcesses = len(runscProcesses(s))
	mounts, err := mountsUnder(s.stateDir)
	require.NoError(b, err)
	h.Mounts = len(mounts)
	for _, dir := range []string{filepath.Join(s.stateDir, "bundles"), s.runscRoot} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			// runsc's own network-namespace file for --network=none, shared by all.
			if e.Name() != "null-netns" {
				h.StateDirs++
			}
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.cmd.Process.Pid))
	require.NoError(b, err)
	h.ServerFDs = len(fds)
	h.Goroutines = int(metricValue(b, s, "go_goroutines"))
	ids, err := s.runscList()
	require.NoError(b, err)
	h.Containers = len(ids)
	return h
}

// runscProcesses are the live processes naming the server's state dir,
// but for the server itself: its sandboxes' runsc, gofer and sandbox
// processes.
func runscProcesses(s *server) []process {
	var out []process
	for _, p := range processesMentioning(s.stateDir) {
		if p.pid != s.cmd.Process.Pid {
			out = append(out, p)
		}
	}
	return out
}

// metricValue reads one unlabelled metric from GET /metrics.
func metricValue(b *testing.B, s *server, name string) float64 {
	resp, err := http.Get(s.httpURL("/metrics"))
	require.NoError(b, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(b, err)
			return f
		}
	}
	b.Fatalf("metric %s not found", name)
	return 0
}

// settled waits until two hygiene readings 500 ms apart agree (refills and
// deletions done), up to a minute, and returns the last one.
func settled(b *testing.B, s *server) hygiene {
	prev := measureHygiene(b, s)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		cur := measureHygiene(b, s)
		if cur == prev {
			return cur
		}
		prev = cur
	}
	return prev
}

// BenchmarkChurn: 1,000 create -> execute -> kill cycles (BENCH_CHURN) at
// concurrency 4 through a server with a warm pool; every count is back to
// where it was before.
func BenchmarkChurn(b *testing.B) {
	n := envInt("BENCH_CHURN", 1000)
	s := startServer(b, "--config", configFile(b, "create_concurrency: 2\npools:\n  - warm: 2\n"))
	s.waitWarm(b, "@base", 2)
	before := settled(b, s)
	res := runLoad(b, load.Config{URL: s.wsURL(""), Sandboxes: n, Concurrency: 4})
	s.waitWarm(b, "@base", 2)
	after := settled(b, s)
	leaked := 0
	if after != before {
		leaked = 1
	}
	scenario(b, fmt.Sprintf("churn-%d", n), "%d leaks (before: %s; after: %s) in %.0f s", leaked, before, after, res.Elapsed)
	saveJSON(b, "churn", map[string]any{"cycles": n, "before": before, "after": after, "load": res})
	require.Equal(b, before, after, "churn left something behind")
}

// BenchmarkCrash: SIGKILL the server with 20 sandboxes running (BENCH_CRASH),
// half of them executing, restart it on the same state dir, and check that
// nothing from before remains: no container, process, mount or state dir.
func BenchmarkCrash(b *testing.B) {
	n := envInt("BENCH_CRASH", 20)
	s := startServer(b, "--config", configFile(b, "pools: []\n"))
	for i := range n {
		c, _ := createSandbox(b, s, sandboxInit(0))
		if i%2 == 0 {
			c.sendJSON(b, execRequest("bash", "sleep 600"))
			c.expectStatus(b, statusExecRunning)
		}
	}
	before := measureHygiene(b, s)
	oldPIDs := runscProcesses(s)
	require.NoError(b, s.cmd.Process.Signal(syscall.SIGKILL))
	<-s.exited

	begin := time.Now()
	restarted := startServerIn(b, s.stateDir, "--config", configFile(b, "pools: []\n"))
	startup := time.Since(begin)
	after := measureHygiene(b, restarted)
	// Old processes still running (a zombie has no command line left).
	alive := 0
	for _, p := range runscProcesses(restarted) {
		for _, old := range oldPIDs {
			if p.pid == old.pid {
				alive++
				b.Logf("still running from before the crash: %d %s", p.pid, p.cmdline)
			}
		}
	}
	left := after.Containers + after.RunscProcesses + after.Mounts + after.StateDirs + alive
	scenario(b, fmt.Sprintf("crash-%d", n), "%d left after restart (before the kill: %s; after the restart: %s; %d old processes alive; restart to listening %.0f ms)",
		left, before, after, alive, float64(startup.Milliseconds()))
	saveJSON(b, "crash", map[string]any{"sandboxes": n, "before": before, "after": after, "old_processes_alive": alive, "restart_ms": startup.Milliseconds()})
	require.Zero(b, left, "the restarted server left sandboxes of the crashed one")
}

// BenchmarkDensity: start up to 500 idle sandboxes (BENCH_DENSITY), stopping
// at the first failure, then report the host memory per sandbox (PSS of
// every runsc process of the server, from /proc/<pid>/smaps_rollup), the
// server's RSS, and the warm-claim latency while they all run; then as
// many raw runsc sandboxes of the same spec, for the ratio.
func BenchmarkDensity(b *testing.B) {
	target := envInt("BENCH_DENSITY", 500)
	s := startServer(b, "--config", configFile(b, fmt.Sprintf("max_sandboxes: %d\ncreate_concurrency: 2\npools:\n  - warm: 2\n", target+10)))
	s.waitWarm(b, "@base", 2)

	// Each holder reads its connection so pings are answered.
	var (
		mu      sync.Mutex
		holders []*client
		readers sync.WaitGroup
	)
	begin := time.Now()
	live, failure := startParallel(target, 4, func() error {
		c, err := dial(s.wsURL("/create"))
		if err == nil {
			_, err = c.createE(sandboxInit(0))
		}
		if err != nil {
			if c != nil {
				c.close()
			}
			return err
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				if _, _, err := c.conn.ReadMessage(); err != nil {
					return
				}
			}
		}()
		mu.Lock()
		holders = append(holders, c)
		mu.Unlock()
		return nil
	})
	startAll := time.Since(begin)
	b.Logf("started %d idle sandboxes in %.0f s (stopped by: %v)", live, startAll.Seconds(), failure)
	s.waitWarm(b, "@base", 2)
	perSandbox := pssMiB(runscProcesses(s)) / float64(live+2) // the two warm ones too
	serverRSS := smapsRollup(s.cmd.Process.Pid, "Rss:")

	// Warm claims while they all run.
	var claims []time.Duration
	for range 30 {
		s.waitWarm(b, "@base", 2)
		t0 := time.Now()
		c, sb := createSandbox(b, s, sandboxInit(60))
		claims = append(claims, time.Since(t0))
		require.True(b, sb.Warm)
		c.killSandbox(b)
		c.close()
	}
	stats := load.Summarize(claims)

	// Kill them all before the harness stops the server.
	for _, c := range holders {
		_ = c.sendJSONE(map[string]string{"action": "kill_sandbox"})
	}
	done := make(chan struct{})
	go func() { readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Errorf("sandboxes not killed within 5 minutes")
	}

	// The same number of raw runsc sandboxes, same spec and flags.
	raw := newRawRunsc(b)
	var ids []string
	rawLive, rawFailure := startParallel(live+2, 4, func() error {
		id, err := raw.startBundleE(raw.bundle, "d")
		if id != "" {
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}
		return err
	})
	require.NoError(b, rawFailure, "raw runsc sandboxes for the ratio")
	rawPerSandbox := pssMiB(processesMentioning(raw.dir)) / float64(rawLive)
	_, delErr := startParallel(len(ids), 4, func() error {
		mu.Lock()
		id := ids[len(ids)-1]
		ids = ids[:len(ids)-1]
		mu.Unlock()
		return raw.deleteE(id)
	})
	assert.NoError(b, delErr)

	stopped, failureText := "", ""
	if failure != nil {
		failureText = failure.Error()
		stopped = "; stopped at the first failure: " + failureText
	}
	scenario(b, fmt.Sprintf("density-%d", target), "%.1f MiB PSS per sandbox with %d idle sandboxes (%.2fx raw runsc's %.1f MiB; target < 20 MiB); server RSS %.0f MiB; warm claim p50 %.1f ms p99 %.1f ms while they run%s",
		perSandbox, live, perSandbox/rawPerSandbox, rawPerSandbox, float64(serverRSS)/1024, stats.P50, stats.P99, stopped)
	saveJSON(b, "density", map[string]any{
		"target": target, "started": live, "start_seconds": startAll.Seconds(), "failure": failureText,
		"pss_mib_per_sandbox": perSandbox, "raw_pss_mib_per_sandbox": rawPerSandbox, "raw_sandboxes": rawLive,
		"server_rss_kib": serverRSS, "warm_claim_ms": stats,
	})
}

// startParallel calls start n times from workers goroutines and stops at
// the first failure; it returns how many succeeded and that failure.
func startParallel(n, workers int, start func() error) (int, error) {
	var (
		mu      sync.Mutex
		next    int
		ok      int
		failure error
		wg      sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= n || failure != nil {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				err := start()
				mu.Lock()
				if err != nil && failure == nil {
					failure = err
				} else if err == nil {
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ok, failure
}

// pssMiB sums the PSS of procs, in MiB.
func pssMiB(procs []process) float64 {
	kib := 0
	for _, p := range procs {
		kib += smapsRollup(p.pid, "Pss:")
	}
	return float64(kib) / 1024
}

// smapsRollup reads one field (in kB) of /proc/<pid>/smaps_rollup; 0 when
// the process is gone.
func smapsRollup(pid int, field string) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	raw, _ := io.ReadAll(f)
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb
		}
	}
	return 0
}
