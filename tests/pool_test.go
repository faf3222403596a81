package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// poolTimeout bounds the wait for a pool to (re)fill on the shared machine.
const poolTimeout = 60 * time.Second

// poolStatus is one entry of GET /pools.
type poolStatus struct {
	Pool        string `json:"pool"`
	Target      int    `json:"target"`
	Warm        int    `json:"warm"`
	Creating    int    `json:"creating"`
	Progressing bool   `json:"progressing"`
	Claims      struct {
		Hit  int `json:"hit"`
		Miss int `json:"miss"`
	} `json:"claims"`
}

type poolsReply struct {
	Sandboxes int          `json:"sandboxes"`
	Pools     []poolStatus `json:"pools"`
}

// pools reads GET /pools; it never fails the test, so Eventually can call it.
func (s *server) pools() (poolsReply, error) {
	resp, err := http.Get(s.httpURL("/pools"))
	if err != nil {
		return poolsReply{}, err
	}
	defer resp.Body.Close()
	var r poolsReply
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("GET /pools: %s", resp.Status)
	}
	return r, json.NewDecoder(resp.Body).Decode(&r)
}

func (s *server) pool(label string) poolStatus {
	r, _ := s.pools()
	for _, p := range r.Pools {
		if p.Pool == label {
			return p
		}
	}
	return poolStatus{}
}

// waitWarm waits until the pool holds n ready sandboxes and creates none.
func (s *server) waitWarm(t testing.TB, label string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		p := s.pool(label)
		return p.Warm == n && p.Creating == 0
	}, poolTimeout, 20*time.Millisecond, "pool %s never held %d warm sandboxes: %+v", label, n, s.pool(label))
}

// configFile writes a server config in a directory of the test's own.
func configFile(t testing.TB, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sandpool.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return path
}

// loggingRunsc is a runsc wrapper that appends each command line to a log,
// then runs the real runsc: the test sees every runsc call the server makes.
func loggingRunsc(t testing.TB) (binary, log string) {
	t.Helper()
	dir := t.TempDir()
	binary, log = filepath.Join(dir, "runsc"), filepath.Join(dir, "calls.log")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\nexec %s \"$@\"\n", log, runscBinary)
	require.NoError(t, os.WriteFile(binary, []byte(script), 0o755))
	// The server records runsc's pin from the file next to the binary.
	version, err := os.ReadFile(runscBinary + ".version")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(binary+".version", version, 0o644))
	return binary, log
}

func readCalls(t testing.TB, log string) []string {
	t.Helper()
	data, err := os.ReadFile(log)
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func TestWarmClaimMakesNoRunscCall(t *testing.T) {
	binary, log := loggingRunsc(t)
	// max = warm: the claimed sandbox still counts, so no refill starts.
	s := startServer(t, "--runsc", binary, "--config", configFile(t, "pools:\n  - warm: 2\n    max: 2\n"))
	s.waitWarm(t, "@base", 2)
	before := readCalls(t, log)

	c, sb := createSandbox(t, s, sandboxInit(60))
	assert.True(t, sb.Warm, `RUNNING says "pool":"hit"`)
	assert.Equal(t, before, readCalls(t, log), "the claim ran no runsc command")
	res := c.run(t, "bash", "echo warm")
	assert.Equal(t, "warm\n", res.Stdout)

	// The log does see the server's runsc calls: one run per warm sandbox.
	runs := slices.DeleteFunc(before, func(line string) bool { return !strings.Contains(line, " run --detach ") })
	assert.Len(t, runs, 2, "%v", before)
	c.killSandbox(t)
}

func TestKilledWarmSandboxIsReplaced(t *testing.T) {
	s := startServer(t, "--config", configFile(t, "pools:\n  - warm: 2\n"))
	s.waitWarm(t, "@base", 2)
	ids, err := s.runscList()
	require.NoError(t, err)
	require.Len(t, ids, 2)
	victim := ids[0]
	data, err := os.ReadFile(filepath.Join(s.stateDir, "bundles", victim, "sandbox.pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(cmdline), "runsc-sandbox\x00"), "pid %d is the sandbox: %q", pid, cmdline)

	// kill -9 the sandbox process the server started for this test.
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		ids, err := s.runscList()
		return err == nil && len(ids) == 2 && !slices.Contains(ids, victim)
	}, poolTimeout, 50*time.Millisecond, "the dead sandbox is deleted and replaced")
	s.waitWarm(t, "@base", 2)

	// Both warm sandboxes work.
	for range 2 {
		c, sb := createSandbox(t, s, sandboxInit(60))
		assert.True(t, sb.Warm)
		assert.Equal(t, "ok\n", c.run(t, "bash", "echo ok").Stdout)
		c.killSandbox(t)
	}
}

func TestConcurrentClaimsAgainstAPoolOfFive(t *testing.T) {
	s := startServer(t, "--config", configFile(t, "pools:\n  - warm: 5\n"))
	s.waitWarm(t, "@base", 5)
	var (
		mu    sync.Mutex
		conns []*client
		hits  int
	)
	var wg sync.WaitGroup
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dial(s.wsURL("/create"))
			if !assert.NoError(t, err) {
				return
			}
			sb, err := c.createE(sandboxInit(120))
			if !assert.NoError(t, err) {
				c.close()
				return
			}
			mu.Lock()
			defer mu.Unlock()
			conns = append(conns, c)
			if sb.Warm {
				hits++
			}
		}()
	}
	waitGroupWithin(t, &wg, 5*time.Minute)
	require.Len(t, conns, 30, "every claim succeeds")
	assert.GreaterOrEqual(t, hits, 5, "the five warm ones were claimed first")
	p := s.pool("@base")
	assert.Equal(t, 30, p.Claims.Hit+p.Claims.Miss)
	assert.Equal(t, hits, p.Claims.Hit)

	for _, c := range conns {
		c.killSandbox(t)
		c.close()
	}
	s.waitWarm(t, "@base", 5)
	require.Eventually(t, func() bool {
		ids, err := s.runscList()
		return err == nil && len(ids) == 5
	}, poolTimeout, 50*time.Millisecond, "only the five warm sandboxes remain")
}

func TestSIGHUPResizesThePools(t *testing.T) {
	config := configFile(t, "pools:\n  - warm: 1\n")
	s := startServer(t, "--config", config)
	s.waitWarm(t, "@base", 1)
	hup := func(text string) {
		require.NoError(t, os.WriteFile(config, []byte(text), 0o600))
		require.NoError(t, s.cmd.Process.Signal(syscall.SIGHUP))
	}
	containers := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool {
			ids, err := s.runscList()
			return err == nil && len(ids) == n
		}, poolTimeout, 50*time.Millisecond, "want %d containers", n)
	}

	hup("pools:\n  - warm: 3\n")
	s.waitWarm(t, "@base", 3)
	containers(3)

	hup("pools:\n  - warm: 3\n    max: 1\n") // invalid: max below warm
	require.Eventually(t, func() bool { return strings.Contains(s.log.tail(maxLogTail), "config reload rejected") },
		poolTimeout, 20*time.Millisecond)
	assert.Contains(t, s.log.tail(maxLogTail), "max must be 0 (no limit) or at least warm")
	assert.Equal(t, 3, s.pool("@base").Target, "the running config stays")

	hup("pools: []\n")
	containers(0)
	r, err := s.pools()
	require.NoError(t, err)
	assert.Empty(t, r.Pools)
}

func TestSnapshotPoolServesTheNewestVersion(t *testing.T) {
	s, _ := startSnapshotServer(t, "--config", configFile(t, "pools:\n  - snapshot: app\n    warm: 1\n"))
	// The snapshot does not exist yet: the pool says so and waits.
	require.Eventually(t, func() bool { return !s.pool("app").Progressing }, poolTimeout, 20*time.Millisecond)

	src, _ := createSandbox(t, s, sandboxInit(300))
	src.run(t, "bash", "echo v1 > /root/version")
	src.snapshot(t, "app")
	s.waitWarm(t, "app", 1)
	c, sb := createSandbox(t, s, fromSnapshot("app"))
	assert.True(t, sb.Warm)
	assert.Equal(t, "v1\n", c.run(t, "bash", "cat /root/version").Stdout)
	c.killSandbox(t)

	// A new version drains the warm sandbox of the old one.
	s.waitWarm(t, "app", 1)
	src.run(t, "bash", "echo v2 > /root/version")
	src.snapshot(t, "app")
	for range 3 { // whether warm or cold, every claim from now on sees v2
		c, _ := createSandbox(t, s, fromSnapshot("app"))
		assert.Equal(t, "v2\n", c.run(t, "bash", "cat /root/version").Stdout)
		c.killSandbox(t)
	}
	s.waitWarm(t, "app", 1)
	c, sb = createSandbox(t, s, fromSnapshot("app"))
	assert.True(t, sb.Warm)
	assert.Equal(t, "v2\n", c.run(t, "bash", "cat /root/version").Stdout)
}

func TestShutdownDeletesWarmSandboxes(t *testing.T) {
	s := startServer(t, "--config", configFile(t, "pools:\n  - warm: 3\n"))
	s.waitWarm(t, "@base", 3)
	code, ok := s.terminate(shutdownTimeout)
	require.True(t, ok, "the server stops within %s", shutdownTimeout)
	assert.Equal(t, 0, code)
	ids, err := s.runscList()
	require.NoError(t, err)
	assert.Empty(t, ids, "no container is left")
	assert.Empty(t, processesMentioning(s.stateDir), "no runsc process is left")
	mounts, err := mountsUnder(s.stateDir)
	require.NoError(t, err)
	assert.Empty(t, mounts)
}

// sandboxProcesses counts the server's runsc-sandbox processes.
func sandboxProcesses(s *server) int {
	n := 0
	for _, p := range processesMentioning(s.stateDir) {
		if strings.HasPrefix(p.cmdline, "runsc-sandbox ") {
			n++
		}
	}
	return n
}

// A claim starts a refill; a shutdown right after it cancels that runsc
// create half-way, which must not leave its sandbox processes running.
func TestShutdownDuringARefillLeavesNothing(t *testing.T) {
	for i := range 3 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			s := startServer(t, "--config", configFile(t, "pools:\n  - warm: 2\n"))
			s.waitWarm(t, "@base", 2)
			createSandbox(t, s, sandboxInit(60))
			// The refill's sandbox process runs: its create is half-way.
			require.Eventually(t, func() bool { return sandboxProcesses(s) == 3 }, poolTimeout, time.Millisecond)
			_, ok := s.terminate(shutdownTimeout)
			require.True(t, ok, "the server stops within %s", shutdownTimeout)
			ids, err := s.runscList()
			require.NoError(t, err)
			assert.Empty(t, ids, "no container is left")
			assert.Empty(t, processesMentioning(s.stateDir), "no runsc process is left")
		})
	}
}

func TestMetricsEndpoint(t *testing.T) {
	s := startServer(t, "--config", configFile(t, "pools:\n  - warm: 1\n"))
	s.waitWarm(t, "@base", 1)
	c, _ := createSandbox(t, s, sandboxInit(60))
	defer c.killSandbox(t)
	resp, err := http.Get(s.httpURL("/metrics"))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, want := range []string{
		`sandpool_claims_total{pool="@base",result="hit"} 1`,
		`sandpool_pool_target{pool="@base"} 1`,
		`sandpool_sandboxes{state="claimed"} 1`,
		`sandpool_create_duration_seconds_count{kind="warm"}`,
		`sandpool_claim_duration_seconds_bucket{result="hit",le="0.005"}`,
		`process_resident_memory_bytes`,
		`go_goroutines`,
	} {
		assert.Contains(t, string(body), want)
	}
}
