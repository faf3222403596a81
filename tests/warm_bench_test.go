package tests

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/runsc"
)

// BenchmarkWarmClaim measures, interleaved in one run, a warm claim
// (/create -> SANDBOX_RUNNING with the pool stocked, the WebSocket dial
// included) against a cold create of the same thing on a server without
// pools, and against raw runsc create+start: for the base rootfs and for a
// 50 MiB filesystem snapshot. Before every sample both servers are idle
// (the warm pool refilled), so the samples do not slow each other down.
// Run: make bench (or go test -run '^$' -bench WarmClaim -benchtime 30x
// ./tests/).
func BenchmarkWarmClaim(b *testing.B) {
	snapDir := benchTempDir(b, "sandpool-bench-warm-")
	const snapName = "warm-50MiB"
	warm := startServer(b, "--filesystem-snapshot-path", snapDir, "--config", configFile(b, fmt.Sprintf(
		"pools:\n  - warm: 2\n  - snapshot: %s\n    warm: 2\n", snapName)))
	cold := startServer(b, "--filesystem-snapshot-path", snapDir)
	raw := newRawRunsc(b)

	// The snapshot: 50 MiB of random data in /root/data.
	src, _ := createSandbox(b, cold, sandboxInit(600))
	res := src.run(b, "bash", fmt.Sprintf("head -c %d /dev/urandom > /root/data", 50<<20))
	require.Equal(b, 0, res.ExitCode, res.Stderr)
	src.snapshot(b, snapName)
	src.killSandbox(b)
	snapBundle := raw.writeBundle(b, "warm-restore", runsc.SpecConfig{
		Rootfs:      rootfsDir,
		Annotations: map[string]string{runsc.RootfsTarAnnotation: snapshotTar(b, snapDir, snapName)},
	})

	type side struct {
		name                  string
		pool                  string
		init                  map[string]any
		rawBundle             string
		rawFlags              []string
		warm, cold, rawCreate []time.Duration
	}
	sides := []*side{
		{name: "base", pool: "@base", init: sandboxInit(60), rawBundle: raw.bundle},
		{name: "snapshot-50MiB", pool: snapName, init: fromSnapshot(snapName), rawBundle: snapBundle, rawFlags: []string{"--allow-rootfs-tar-annotation"}},
	}

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, sd := range sides {
			ours := func() {
				b.StopTimer()
				warm.waitWarm(b, sd.pool, 2)
				b.StartTimer()
				begin := time.Now()
				c, sb := createSandbox(b, warm, sd.init)
				sd.warm = append(sd.warm, time.Since(begin))
				require.True(b, sb.Warm, "a stocked pool serves the claim")
				c.killSandbox(b)
				c.close()

				// Cold, once the warm server has refilled and is idle.
				b.StopTimer()
				warm.waitWarm(b, sd.pool, 2)
				b.StartTimer()
				begin = time.Now()
				c, sb = createSandbox(b, cold, sd.init)
				sd.cold = append(sd.cold, time.Since(begin))
				require.False(b, sb.Warm)
				c.killSandbox(b)
				c.close()
			}
			theirs := func() {
				begin := time.Now()
				id := raw.startBundle(b, sd.rawBundle, fmt.Sprintf("w%d-", i), sd.rawFlags...)
				sd.rawCreate = append(sd.rawCreate, time.Since(begin))
				raw.delete(b, id)
			}
			interleaveSamples(i, ours, theirs)
		}
	}
	b.StopTimer()
	for _, sd := range sides {
		report(b, "warm-claim-"+sd.name, sd.warm, sd.rawCreate)
		report(b, "cold-create-"+sd.name, sd.cold, sd.rawCreate)
		reportSpeedup(b, "warm-vs-cold-"+sd.name, sd.warm, sd.cold)
	}
}

// reportSpeedup logs how much faster warm is than cold, for bench.sh.
func reportSpeedup(b *testing.B, name string, warm, cold []time.Duration) {
	if b.N == 1 {
		return
	}
	wp50, wp99 := percentile(warm, 50), percentile(warm, 99)
	cp50, cp99 := percentile(cold, 50), percentile(cold, 99)
	b.ReportMetric(ms(cp50)/ms(wp50), name+"-speedup-p50")
	b.Logf("%s: warm p50 %.2f ms p99 %.2f ms; cold p50 %.1f ms p99 %.1f ms; %.0fx faster (n=%d)",
		name, ms(wp50), ms(wp99), ms(cp50), ms(cp99), ms(cp50)/ms(wp50), len(warm))
}
