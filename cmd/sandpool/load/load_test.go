package load

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPercentile(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, tc := range []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample is every percentile", ms(7), 99, 7 * time.Millisecond},
		{"median of an odd count", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"median of an even count is the lower middle (nearest rank)", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p90 of ten", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{"p99 of ten is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p99 of a hundred", ms(hundred...), 99, 99 * time.Millisecond},
		{"p29 of a hundred is not moved by float noise", ms(hundred...), 29, 29 * time.Millisecond},
		{"p100 is the max", ms(hundred...), 100, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, Percentile(tc.samples, tc.p))
		})
	}
}

func TestSummarizeSortsAndReportsMilliseconds(t *testing.T) {
	s := Summarize([]time.Duration{30 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 1500 * time.Microsecond})
	assert.Equal(t, Stats{N: 4, P50: 10, P90: 30, P99: 30, Max: 30}, s)
	assert.Equal(t, Stats{}, Summarize(nil))
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{"loopback IPv4", Config{URL: "ws://127.0.0.1:8080", Sandboxes: 1}, ""},
		{"loopback IPv6", Config{URL: "ws://[::1]:8080", Sandboxes: 1}, ""},
		{"localhost", Config{URL: "ws://localhost:8080", Sandboxes: 1}, ""},
		{"http is taken as ws", Config{URL: "http://127.0.0.1:8080", Sandboxes: 1}, ""},
		{"a remote address", Config{URL: "ws://10.1.2.3:8080", Sandboxes: 1}, "refusing a non-loopback target"},
		{"a remote name", Config{URL: "ws://sandpool.invalid:8080", Sandboxes: 1}, "refusing a non-loopback target"},
		{"a remote address allowed", Config{URL: "ws://10.1.2.3:8080", Sandboxes: 1, AllowRemote: true}, ""},
		{"another scheme", Config{URL: "ftp://127.0.0.1", Sandboxes: 1}, "want ws://host:port"},
		{"no host", Config{URL: "ws://", Sandboxes: 1}, "has no host"},
		{"no stop condition", Config{URL: "ws://127.0.0.1:8080"}, "must stop by itself"},
		{"negative concurrency", Config{URL: "ws://127.0.0.1:8080", Sandboxes: 1, Concurrency: -1}, "concurrency must be positive"},
		{"negative duration", Config{URL: "ws://127.0.0.1:8080", Duration: -time.Second}, "must not be negative"},
		{"another language", Config{URL: "ws://127.0.0.1:8080", Sandboxes: 1, Language: "ruby"}, "unsupported language"},
		{"raw with a snapshot", Config{Sandboxes: 1, Snapshot: "s", Raw: &RawConfig{}}, "not supported with --raw-runsc"},
		{"raw with another language", Config{Sandboxes: 1, Language: "ruby", Raw: &RawConfig{}}, "unsupported language"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
		})
	}
}

// fakeServer speaks the create/execute/kill part of the protocol and
// records what clients did.
type fakeServer struct {
	*httptest.Server
	mu       sync.Mutex
	creates  []time.Time
	live     int // created and not killed
	maxLive  int
	refuseN  int           // refuse every Nth create (0: none)
	delay    time.Duration // before RUNNING
	silent   bool          // never answer the init message
	execFail bool          // refuse executions
}

func newFakeServer(t *testing.T, configure func(*fakeServer)) *fakeServer {
	f := &fakeServer{}
	if configure != nil {
		configure(f)
	}
	upgrader := websocket.Upgrader{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/create" {
			http.NotFound(w, r)
			return
		}
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		f.serve(ws)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) serve(ws *websocket.Conn) {
	status := func(s string, extra ...string) {
		m := map[string]string{"event": "status_update", "status": s}
		if len(extra) > 0 {
			m["message"] = extra[0]
		}
		_ = ws.WriteJSON(m)
	}
	var init map[string]any
	if ws.ReadJSON(&init) != nil {
		return
	}
	f.mu.Lock()
	f.creates = append(f.creates, time.Now())
	n := len(f.creates)
	f.mu.Unlock()
	if f.silent {
		_, _, _ = ws.ReadMessage() // until the client gives up
		return
	}
	time.Sleep(f.delay)
	status("SANDBOX_CREATING")
	if f.refuseN > 0 && n%f.refuseN == 0 {
		status("SANDBOX_CREATION_ERROR", "Failed to create the sandbox: no luck")
		return
	}
	f.mu.Lock()
	f.live++
	f.maxLive = max(f.maxLive, f.live)
	f.mu.Unlock()
	_ = ws.WriteJSON(map[string]string{"event": "sandbox_id", "sandbox_id": "x", "sandbox_token": "y"})
	status("SANDBOX_RUNNING")
	for {
		var m map[string]any
		if ws.ReadJSON(&m) != nil {
			return // a sandbox not killed stays live: the test sees the leak
		}
		switch {
		case m["action"] == "kill_sandbox":
			for _, s := range []string{"SANDBOX_KILLING", "SANDBOX_DELETING", "SANDBOX_DELETED"} {
				status(s)
			}
			f.mu.Lock()
			f.live--
			f.mu.Unlock()
			status("SANDBOX_KILLED")
			_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			return
		case f.execFail:
			status("SANDBOX_EXECUTION_ERROR", "The execute request has no code.")
		default:
			status("SANDBOX_EXECUTION_RUNNING")
			_ = ws.WriteJSON(map[string]string{"event": "stdout", "data": "hi\n"})
			status("SANDBOX_EXECUTION_DONE")
		}
	}
}

func (f *fakeServer) stats() (creates []time.Time, live, maxLive int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.creates...), f.live, f.maxLive
}

func (f *fakeServer) wsURL() string { return "ws" + strings.TrimPrefix(f.URL, "http") }

func run(t *testing.T, cfg Config) Result {
	t.Helper()
	r, err := New(cfg)
	require.NoError(t, err)
	res, err := r.Run(context.Background())
	require.NoError(t, err)
	return res
}

func TestStopsAfterTheCountWithTheConcurrencyAsked(t *testing.T) {
	f := newFakeServer(t, func(f *fakeServer) { f.delay = 5 * time.Millisecond })
	res := run(t, Config{URL: f.wsURL(), Sandboxes: 23, Concurrency: 4})
	creates, live, maxLive := f.stats()
	assert.Len(t, creates, 23)
	assert.Equal(t, 0, live, "every sandbox killed")
	assert.LessOrEqual(t, maxLive, 4)
	assert.Equal(t, 23, res.Completed)
	assert.Zero(t, res.Failed)
	for _, name := range LatencyNames {
		assert.Equal(t, 23, res.Latency[name].N, name)
		assert.Positive(t, res.Latency[name].P50, name)
	}
	assert.GreaterOrEqual(t, res.Latency["create"].P50, 5.0, "create includes the server's delay")
	assert.Positive(t, res.Throughput)
	assert.Equal(t, "sandpool", res.Mode)
	assert.False(t, res.Interrupted)
}

func TestStopsAfterTheDuration(t *testing.T) {
	f := newFakeServer(t, func(f *fakeServer) { f.delay = 10 * time.Millisecond })
	begin := time.Now()
	res := run(t, Config{URL: f.wsURL(), Duration: 300 * time.Millisecond, Concurrency: 2})
	creates, live, _ := f.stats()
	require.NotEmpty(t, creates)
	for _, at := range creates {
		// No cycle starts after the deadline (the init is sent right after the dial).
		assert.WithinDuration(t, begin, at, 300*time.Millisecond+time.Second)
	}
	assert.Equal(t, len(creates), res.Completed)
	assert.Equal(t, 0, live)
}

func TestTheCountStopsADurationRunEarly(t *testing.T) {
	f := newFakeServer(t, nil)
	res := run(t, Config{URL: f.wsURL(), Sandboxes: 5, Duration: time.Hour, Concurrency: 3})
	assert.Equal(t, 5, res.Completed)
	assert.Less(t, res.Elapsed, 30.0)
}

func TestCancelStopsNewCyclesAndFinishesTheOthers(t *testing.T) {
	f := newFakeServer(t, func(f *fakeServer) { f.delay = 20 * time.Millisecond })
	r, err := New(Config{URL: f.wsURL(), Sandboxes: 1000, Concurrency: 2, Think: time.Hour})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		require.Eventually(t, func() bool { c, _, _ := f.stats(); return len(c) >= 2 }, 5*time.Second, 5*time.Millisecond)
		cancel()
	}()
	res, err := r.Run(ctx)
	require.NoError(t, err)
	_, live, _ := f.stats()
	assert.Equal(t, 2, res.Completed+res.Failed)
	assert.Equal(t, 0, live)
	assert.True(t, res.Interrupted)
}

func TestErrorsAreCountedByCause(t *testing.T) {
	f := newFakeServer(t, func(f *fakeServer) { f.refuseN = 3 })
	res := run(t, Config{URL: f.wsURL(), Sandboxes: 9, Concurrency: 1})
	assert.Equal(t, 6, res.Completed)
	assert.Equal(t, 3, res.Failed)
	assert.Equal(t, map[string]int{"SANDBOX_CREATION_ERROR": 3}, res.Errors)
	assert.Contains(t, res.ErrorExamples["SANDBOX_CREATION_ERROR"], "no luck")
	assert.Equal(t, 6, res.Latency["create"].N, "failed cycles are not in the latencies")
}

func TestAFailedExecutionStillKillsItsSandbox(t *testing.T) {
	f := newFakeServer(t, func(f *fakeServer) { f.execFail = true })
	res := run(t, Config{URL: f.wsURL(), Sandboxes: 4, Concurrency: 2})
	assert.Equal(t, map[string]int{"SANDBOX_EXECUTION_ERROR": 4}, res.Errors)
	require.Eventually(t, func() bool { _, live, _ := f.stats(); return live == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestASilentServerTimesOut(t *testing.T) {
	f := newFakeServer(t, func(f *fakeServer) { f.silent = true })
	res := run(t, Config{URL: f.wsURL(), Sandboxes: 2, Concurrency: 2, StepTimeout: 100 * time.Millisecond})
	assert.Equal(t, map[string]int{"timeout (create)": 2}, res.Errors)
}

func TestAnAbsentServerFailsToDial(t *testing.T) {
	f := newFakeServer(t, nil)
	url := f.wsURL()
	f.Close()
	res := run(t, Config{URL: url, Sandboxes: 3, Concurrency: 1})
	assert.Equal(t, map[string]int{"dial (create)": 3}, res.Errors)
}

func TestProgressIsReported(t *testing.T) {
	f := newFakeServer(t, func(f *fakeServer) { f.delay = 100 * time.Millisecond })
	var mu sync.Mutex
	var seen []Progress
	run(t, Config{URL: f.wsURL(), Sandboxes: 8, Concurrency: 1, Progress: func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, p)
	}})
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, seen)
	for i := 1; i < len(seen); i++ {
		assert.GreaterOrEqual(t, seen[i].Completed, seen[i-1].Completed)
	}
}

func TestResultJSON(t *testing.T) {
	f := newFakeServer(t, nil)
	res := run(t, Config{URL: f.wsURL(), Sandboxes: 2, Concurrency: 1})
	raw, err := json.Marshal(res)
	require.NoError(t, err)
	var back map[string]any
	require.NoError(t, json.Unmarshal(raw, &back))
	for _, key := range []string{"mode", "target", "concurrency", "completed", "failed", "elapsed_seconds", "throughput_per_second", "latency_ms", "errors"} {
		assert.Contains(t, back, key)
	}
	assert.Equal(t, []any{"create", "done", "first_output", "total"}, sortedKeys(back["latency_ms"].(map[string]any)))
}

func sortedKeys(m map[string]any) []any {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]any, len(keys))
	for i, k := range keys {
		out[i] = k
	}
	return out
}
