package pool

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sandpool/sandpool/actors"
)

// metrics are the pool's Prometheus metrics. Counters and histograms are
// updated as things happen; the per-pool gauges are read from Status at
// scrape time, so /metrics and /pools never disagree.
type metrics struct {
	claims         *prometheus.CounterVec
	claimSeconds   *prometheus.HistogramVec
	createSeconds  *prometheus.HistogramVec
	createFailures *prometheus.CounterVec
	sandboxes      *prometheus.GaugeVec
}

// Latency buckets from 0.25 ms (a warm claim) to 30 s (a large snapshot).
var latencyBuckets = []float64{.00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newMetrics() *metrics {
	m := &metrics{
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandpool_claims_total",
			Help: "Sandbox requests by pool (@base, a snapshot, or @none without a pool) and result (hit, miss, error).",
		}, []string{"pool", "result"}),
		claimSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sandpool_claim_duration_seconds",
			Help:    "Time from a create request to a running sandbox, by result (hit, miss).",
			Buckets: latencyBuckets,
		}, []string{"result"}),
		createSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sandpool_create_duration_seconds",
			Help:    "Time runsc took to create and start a sandbox, by kind (warm: a refill, cold: for a waiting client, restore: from a checkpoint).",
			Buckets: latencyBuckets,
		}, []string{"kind"}),
		createFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandpool_create_failures_total",
			Help: "Sandbox creations that failed (and warm sandboxes that died), by pool.",
		}, []string{"pool"}),
		sandboxes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sandpool_sandboxes",
			Help: "Sandboxes by lifecycle state (warming, ready, claimed, executing, checkpointing, stopping, failed).",
		}, []string{"state"}),
	}
	// Every state is a series from the start, at 0 until a sandbox enters
	// it: a query never finds a state missing.
	for st := actors.StateWarming; st <= actors.StateFailed; st++ {
		if st != actors.StateStopped {
			m.sandboxes.WithLabelValues(st.String())
		}
	}
	return m
}

// onState is every sandbox actor's OnState hook.
func (m *metrics) onState(from, to actors.State) {
	if from != actors.StateNew {
		m.sandboxes.WithLabelValues(from.String()).Dec()
	}
	if to != actors.StateStopped {
		m.sandboxes.WithLabelValues(to.String()).Inc()
	}
}

// claimed records one Create.
func (m *metrics) claimed(label string, hit bool, err error, took time.Duration) {
	result := "miss"
	switch {
	case err != nil:
		if errors.Is(err, context.Canceled) {
			return // the client left; nothing about the pool
		}
		m.claims.WithLabelValues(label, "error").Inc()
		return
	case hit:
		result = "hit"
	}
	m.claims.WithLabelValues(label, result).Inc()
	m.claimSeconds.WithLabelValues(result).Observe(took.Seconds())
}

// Per-pool gauges, collected from Status.
var (
	poolTargetDesc      = prometheus.NewDesc("sandpool_pool_target", "Warm sandboxes the pool keeps.", []string{"pool"}, nil)
	poolWarmDesc        = prometheus.NewDesc("sandpool_pool_warm", "Ready sandboxes in the pool.", []string{"pool"}, nil)
	poolCreatingDesc    = prometheus.NewDesc("sandpool_pool_creating", "Sandboxes the pool is creating.", []string{"pool"}, nil)
	poolProgressingDesc = prometheus.NewDesc("sandpool_pool_progressing", "1 unless the pool's creates keep failing.", []string{"pool"}, nil)
	queuedDesc          = prometheus.NewDesc("sandpool_create_queue", "Client creates waiting for a creation slot.", nil, nil)
)

// collector exports Status as gauges.
type collector struct{ p *Pool }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolTargetDesc, poolWarmDesc, poolCreatingDesc, poolProgressingDesc, queuedDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.p.Status(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(st.Queued))
	for _, ps := range st.Pools {
		progressing := 0.0
		if ps.Progressing {
			progressing = 1
		}
		ch <- prometheus.MustNewConstMetric(poolTargetDesc, prometheus.GaugeValue, float64(ps.Target), ps.Pool)
		ch <- prometheus.MustNewConstMetric(poolWarmDesc, prometheus.GaugeValue, float64(ps.Warm), ps.Pool)
		ch <- prometheus.MustNewConstMetric(poolCreatingDesc, prometheus.GaugeValue, float64(ps.Creating), ps.Pool)
		ch <- prometheus.MustNewConstMetric(poolProgressingDesc, prometheus.GaugeValue, progressing, ps.Pool)
	}
}

// register adds every pool metric to r.
func (m *metrics) register(r prometheus.Registerer, p *Pool) error {
	for _, c := range []prometheus.Collector{m.claims, m.claimSeconds, m.createSeconds, m.createFailures, m.sandboxes, collector{p}} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
