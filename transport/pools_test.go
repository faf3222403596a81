package transport

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool"
)

func getPools(t *testing.T, s *testServer) pool.Status {
	t.Helper()
	resp, err := http.Get(s.srv.URL + "/pools")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var st pool.Status
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

func TestRunningSaysWhetherThePoolServedTheCreate(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := startTestServer(t, pool.Config{Registerer: reg, Limits: pool.Limits{MaxSandboxes: 4, Pools: []pool.PoolConfig{{Warm: 1, Max: 1}}}},
		func(c *Config) { c.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{}) })
	require.Eventually(t, func() bool {
		st := getPools(t, s)
		return len(st.Pools) == 1 && st.Pools[0].Warm == 1
	}, 5*time.Second, 5*time.Millisecond)

	running := func() map[string]any {
		c := s.dial(t, "/create")
		c.send(map[string]any{"idle_timeout": 60})
		c.expectStatus(actors.StatusCreating)
		require.Equal(t, "sandbox_id", c.next()["event"])
		return c.expectStatus(actors.StatusRunning)
	}
	assert.Equal(t, "hit", running()["pool"])
	assert.Equal(t, "miss", running()["pool"], "max 1: the pool does not refill while its sandbox is in use")

	st := getPools(t, s)
	require.Len(t, st.Pools, 1)
	ps := st.Pools[0]
	assert.Equal(t, "@base", ps.Pool)
	assert.Equal(t, 1, ps.Target)
	assert.Equal(t, pool.Claims{Hit: 1, Miss: 1}, ps.Claims)
	assert.InDelta(t, 0.5, *ps.HitRate, 0.001)
	assert.True(t, ps.Progressing)
	assert.Equal(t, 2, st.Sandboxes)

	resp, err := http.Get(s.srv.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), `sandpool_claims_total{pool="@base",result="hit"} 1`)
	assert.Contains(t, string(body), `sandpool_claims_total{pool="@base",result="miss"} 1`)
	assert.Contains(t, string(body), `sandpool_pool_target{pool="@base"} 1`)
	assert.Contains(t, string(body), `sandpool_sandboxes{state="claimed"} 2`)
	for _, state := range []string{"executing", "checkpointing", "failed"} {
		assert.Contains(t, string(body), `sandpool_sandboxes{state="`+state+`"} 0`, "every state is a series, 0 included")
	}
}

func TestPoolsJSONShape(t *testing.T) {
	s := newTestServer(t, 4)
	resp, err := http.Get(s.srv.URL + "/pools")
	require.NoError(t, err)
	defer resp.Body.Close()
	var raw map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&raw))
	assert.Equal(t, []any{}, raw["pools"], "an empty list, not null")
	assert.EqualValues(t, 4, raw["max_sandboxes"])
	assert.EqualValues(t, 2, raw["create_concurrency"])

	// Without a metrics handler there is no /metrics.
	resp2, err := http.Get(s.srv.URL + "/metrics")
	require.NoError(t, err)
	resp2.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp2.StatusCode)
}
