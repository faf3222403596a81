package pool

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/runsc"
)

// BenchmarkClaimFromAStockedPool times Pool.Create served by a warm pool
// (the fake runtime makes refills instant): the in-process part of a warm
// claim, without WebSocket or runsc. Each op waits, untimed, for the pool to
// be stocked again, and kills the claimed sandbox afterwards.
func BenchmarkClaimFromAStockedPool(b *testing.B) {
	p, err := New(Config{
		// protoactor's own log line would split the benchmark's result line.
		System:  actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) })),
		Runtime: runsc.NewFake(), Logger: zerolog.Nop(),
		Limits:               Limits{MaxSandboxes: 100, Pools: []PoolConfig{{Warm: 1}}},
		HealthInterval:       time.Hour,
		HousekeepingInterval: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	ctx := context.Background()
	stocked := func() bool {
		st, err := p.Status(ctx)
		if err != nil {
			b.Fatal(err)
		}
		i := slices.IndexFunc(st.Pools, func(ps PoolStatus) bool { return ps.Pool == baseLabel })
		return i >= 0 && st.Pools[i].Warm == 1
	}
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for !stocked() {
			time.Sleep(50 * time.Microsecond)
		}
		b.StartTimer()
		begin := time.Now()
		ref, err := p.Create(ctx, actors.Settings{}, nopSink{})
		samples = append(samples, time.Since(begin))
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if !ref.Warm {
			b.Fatal("a claim from a stocked pool was not served warm")
		}
		ref.Send(actors.KillSandbox{})
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(samples[(len(samples)*99+99)/100-1].Microseconds()), "p99-µs")
}
