#!/usr/bin/env bash
# Runs every benchmark of `make bench` and rewrites docs/benchmarks.md with
# the date, the machine, the commands, a one-line result per scenario, the
# targets met or missed, and the raw output and JSON:
#  1. latency, sandpool vs raw runsc interleaved in one run (BENCH_N samples);
#  2. scale scenarios once each: throughput, density, churn and crash hygiene
#     (sandpool load against the server and with --raw-runsc);
#  3. in-process Go benchmarks: a claim from a stocked pool (fake runtime)
#     and the protocol's decode/encode.
set -euo pipefail
cd "$(dirname "$0")/.."
json_dir=$(mktemp -d)
trap 'rm -rf "$json_dir"' EXIT
export BENCH_JSON_DIR=$json_dir

latency_cmd=(go test -v -run '^$' -bench 'ColdPath|WarmClaim|Snapshot|Checkpoint' -benchtime "${BENCH_N:-30}x" -count 1 -timeout 40m ./tests/)
scale_cmd=(go test -v -run '^$' -bench 'Throughput|Density|Churn|Crash' -benchtime 1x -count 1 -timeout 60m ./tests/)
micro_cmd=(go test -run '^$' -bench 'ClaimFromAStockedPool|Decode|Encode' -benchmem -count 1 ./pool/ ./transport/)

run() {
	local out
	echo "+ $*" >&2
	out=$("$@" 2>&1) || { echo "$out" >&2; exit 1; }
	echo "$out" >&2
	printf '%s' "$out"
}
latency=$(run "${latency_cmd[@]}")
scale=$(run "${scale_cmd[@]}")
micro=$(run "${micro_cmd[@]}")
out=$latency

# One line per scenario: name: value unit (ratio vs raw).
summary=$(
	echo "$latency" | sed -n 's/.*bench_test.go:[0-9]*: \([A-Za-z0-9+-]*\): sandpool p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms; raw runsc p50 [0-9.]* ms p99 [0-9.]* ms; ratio \([0-9.]*x\).*/\1: \2 ms p50, \3 ms p99 (\4 raw runsc)/p'
	echo "$latency" | sed -n 's/.*bench_test.go:[0-9]*: warm-vs-cold-\([A-Za-z0-9+-]*\): warm p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms; cold p50 [0-9.]* ms p99 [0-9.]* ms; \([0-9.]*x\) faster.*/warm-claim-vs-cold-\1: \2 ms p50, \3 ms p99 (\4 faster than a cold create)/p'
	echo "$scale" | sed -n 's/.*scale_bench_test.go:[0-9]*: scenario: //p'
	echo "$micro" | awk '/^BenchmarkClaimFromAStockedPool/ {for (i = 1; i < NF; i++) {if ($(i+1) == "p50-µs") p50 = $i; if ($(i+1) == "p99-µs") p99 = $i}; printf "claim-in-process: %s µs p50, %s µs p99 (fake runtime, no WebSocket)\n", p50, p99}
		/^Benchmark(Decode|Encode)/ {name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name); printf "%s: %s ns/op, %s allocs/op\n", name, $3, $(NF-1)}'
)
echo
echo "$summary"
mkdir -p docs
{
	echo "# Benchmarks"
	echo
	echo "Written by \`make bench\` on $(date -u +%Y-%m-%dT%H:%MZ). Latencies are medians and p99 of"
	echo "${BENCH_N:-30} samples; sandpool and raw runsc are measured interleaved in the"
	echo "same run, so compare the ratios, not absolute times across runs (the"
	echo "machine is shared and noisy)."
	echo
	echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r);"
	echo "$(go version | cut -d' ' -f3); runsc $(cat bin/runsc.version 2>/dev/null || echo unknown) (systrap, --network=none, --overlay2=root:memory)."
	echo
	echo "Commands (tests/bench.sh):"
	echo
	echo "* \`${latency_cmd[*]}\`"
	echo "* \`${scale_cmd[*]}\`"
	echo "* \`${micro_cmd[*]}\`"
	echo
	echo "## Summary"
	echo
	echo "One line per scenario: \`name: value unit (ratio vs raw runsc)\`."
	echo
	echo '```'
	echo "$summary"
	echo '```'
	echo
	echo "## Latency"
	echo
	echo "| measurement | sandpool p50 | sandpool p99 | raw runsc p50 | raw runsc p99 | ratio (p50) |"
	echo "| --- | --- | --- | --- | --- | --- |"
	echo "$out" | sed -n 's/.*bench_test.go:[0-9]*: \([A-Za-z0-9+-]*\): sandpool p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms; raw runsc p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms; ratio \([0-9.]*x\).*/| \1 | \2 ms | \3 ms | \4 ms | \5 ms | \6 |/p'
	echo
	echo "* create: \`/create\` -> \`SANDBOX_RUNNING\` (cold) vs \`runsc create\` + \`runsc start\` of the same spec."
	echo "* exec: \`echo hi\` execute -> \`SANDBOX_EXECUTION_DONE\` vs one \`runsc exec bash -c 'echo hi'\`."
	echo "* exec-checkpointable: the same in a sandbox created with \`enable_checkpoint\`, whose executions go through"
	echo "  the agent's relay so that their background jobs survive a restore (a second process start in gVisor)."
	echo "* snapshot-N: \`snapshot_filesystem\` -> \`SANDBOX_FILESYSTEM_SNAPSHOT_CREATED\` on a live sandbox holding N of"
	echo "  random data in \`/root/data\` vs one \`runsc tar rootfs-upper --file=F.tar\` of a live raw sandbox holding"
	echo "  the same (a fresh F.tar each sample, deleted afterwards, untimed). Both write to the same disk. sandpool"
	echo "  also computes the tar's sha256 while runsc writes it, fsyncs it, writes and fsyncs its metadata and"
	echo "  renames both into place (pool/snapshots/store.go); raw runsc does none of that and leaves the tar in"
	echo "  the page cache, so for large snapshots the fsync's disk write is expected to be most of the difference."
	echo "* snapshot-N-vs-tar+fsync: the same sandpool samples against raw \`runsc tar\` followed by an fsync of"
	echo "  its file, the floor for a snapshot that survives a crash."
	echo "* restore-N: \`/create\` with \`filesystem_snapshot_name\` -> \`SANDBOX_RUNNING\` vs"
	echo "  \`runsc --allow-rootfs-tar-annotation create\` + \`runsc start\` of a bundle whose config.json names"
	echo "  that sample's tar (\`dev.gvisor.tar.rootfs.upper\`). Each side's tar was just written, so both read it"
	echo "  from the page cache; the restored sandbox is killed (raw: \`runsc delete\`) after each sample, untimed."
	echo "* warm-claim-X: \`/create\` -> \`SANDBOX_RUNNING\` (WebSocket dial included) served by a stocked warm"
	echo "  pool (\`\"pool\":\"hit\"\`), X = the base rootfs or a 50 MiB snapshot; cold-create-X: the same request"
	echo "  on a second server without pools. Both against raw create+start of the same spec (for the snapshot,"
	echo "  with its tar). Before each sample the warm server has refilled its pool and is idle."
	echo "* checkpoint: \`{\"action\":\"checkpoint\"}\` -> \`SANDBOX_CHECKPOINTED\` of an idle sandbox (runsc checkpoint into"
	echo "  the checkpoint store, image and metadata fsynced, container deleted) vs \`runsc checkpoint --image-path\`"
	echo "  + \`runsc delete --force\`."
	echo "* restore: \`/attach\` -> \`SANDBOX_RUNNING\` of that checkpoint (WebSocket dial and token check included)"
	echo "  vs one \`runsc restore --detach\`. Each side cycles one sandbox: restore, checkpoint, restore, ..."
	echo "* In each snapshot/restore pair, which side runs first alternates every sample."
	echo "* Target: sandpool adds at most 15% over raw runsc (ratio at most 1.15x)."
	echo
	missed=$(echo "$out" | sed -n 's/.*bench_test.go:[0-9]*: \([A-Za-z0-9+-]*\): sandpool .* ratio \([0-9.]*\)x.*/\1 \2/p' |
		awk '$2 > 1.15 {printf "%s%s (%.2fx)", sep, $1, $2; sep=", "}')
	if [ -n "$missed" ]; then
		echo "**Missed the 1.15x target:** $missed."
		echo
		echo "Causes found (profiled; they hold as long as the design does):"
		echo
		case "$missed" in *exec-checkpointable*)
			echo "* exec-checkpointable: a sandbox created with \`enable_checkpoint\` starts each execution"
			echo "  through the agent's relay, which has init start the program, so that background jobs survive"
			echo "  a restore (gVisor kills every process descended from a \`runsc exec\` on restore). That is"
			echo "  two process starts inside gVisor instead of one. Plain sandboxes (exec) do not pay it."
			echo "  The way under one \`runsc exec\` is a channel to init kept open per sandbox, not built yet."
		esac
		case "$missed" in *snapshot-*)
			echo "* snapshot-N: sandpool answers only once the tar is durable and its sha256 recorded. A CPU"
			echo "  profile of the server over 20 snapshots of 200 MiB (\`serve --pprof-listen\`, then"
			echo "  \`go tool pprof -top\`) put 67% of its CPU time in sha256 (SHA-NI, about 1.6 GB/s on one core"
			echo "  here: 120 ms per 200 MiB) and 17% in reading the tar back to hash it; the fsync is the rest"
			echo "  (the -vs-tar+fsync rows take it out of the ratio). On 2 cores the hashing competes with"
			echo "  runsc's own tar writing, so it does not hide behind it."
		esac
	else
		echo "Every measurement meets the 1.15x target."
	fi
	echo
	echo "## Warm pools"
	echo
	echo "Targets: warm claim p50 under 5 ms, p99 under 25 ms, at least 30x faster than a cold create (p50)."
	echo
	echo "| pool | warm p50 | warm p99 | cold p50 | cold p99 | cold / warm (p50) |"
	echo "| --- | --- | --- | --- | --- | --- |"
	echo "$out" | sed -n 's/.*bench_test.go:[0-9]*: warm-vs-cold-\([A-Za-z0-9+-]*\): warm p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms; cold p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms; \([0-9.]*x\) faster.*/| \1 | \2 ms | \3 ms | \4 ms | \5 ms | \6 |/p'
	echo
	warm_missed=$(echo "$out" | sed -n 's/.*bench_test.go:[0-9]*: warm-vs-cold-\([A-Za-z0-9+-]*\): warm p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms; .* \([0-9.]*\)x faster.*/\1 \2 \3 \4/p' |
		awk '$2 >= 5 {printf "%s%s p50 %.2f ms", sep, $1, $2; sep=", "} $3 >= 25 {printf "%s%s p99 %.2f ms", sep, $1, $3; sep=", "} $4 < 30 {printf "%s%s only %.0fx", sep, $1, $4; sep=", "}')
	if [ -n "$warm_missed" ]; then
		echo "**Missed a warm-claim target:** $warm_missed."
	else
		echo "Every warm claim meets its targets."
	fi
	echo
	echo "## Scale"
	echo
	echo "* throughput-cN: \`sandpool load --sandboxes \${BENCH_SANDBOXES:-200} --concurrency N\` (create -> execute"
	echo "  \`echo hi\` -> read all output -> kill) against a server with the \`make run\` config (2 warm base"
	echo "  sandboxes, 2 creations at once), then \`sandpool load --raw-runsc\` doing the same with the runsc CLI"
	echo "  (create+start, exec, delete --force) at the same concurrency. The ratio is sandpool's throughput over"
	echo "  raw runsc's (above 1: sandpool is faster, thanks to its warm pool)."
	echo "* density-N: N idle sandboxes (\`idle_timeout\` 0) started 4 at a time, stopping at the first"
	echo "  failure. Memory per sandbox is the PSS (from \`/proc/<pid>/smaps_rollup\`) of every runsc, gofer and"
	echo "  sandbox process of the server, divided by the live sandboxes (the 2 warm ones included); then 30"
	echo "  warm claims while they all run; then as many raw runsc sandboxes of the same spec and flags"
	echo "  (create + start, 4 at a time), whose PSS per sandbox gives the ratio. Target: under 20 MiB each."
	echo "* churn-N: N create -> execute -> kill cycles at concurrency 4 with a warm pool; runsc processes,"
	echo "  containers, mounts, state directories (bundles and runsc root entries), the server's open fds and"
	echo "  its goroutines are counted once settled before and after. Target: all equal."
	echo "* crash-N: N sandboxes (half of them executing \`sleep 600\`), then SIGKILL of the server, a restart"
	echo "  on the same state dir, and the same counts plus the old processes still running. Target: nothing"
	echo "  from before remains."
	echo
	density=$(echo "$summary" | sed -n 's/^density-[0-9]*: \([0-9.]*\) MiB.*/\1/p')
	scale_missed=$(
		[ -n "$density" ] && awk -v d="$density" 'BEGIN {if (d >= 20) printf "density %.1f MiB per sandbox; ", d}'
		echo "$summary" | grep -E '^churn-[0-9]+: ' | grep -vq '^churn-[0-9]*: 0 leaks' && printf 'churn left something behind; '
		echo "$summary" | grep -E '^crash-[0-9]+: ' | grep -vq '^crash-[0-9]*: 0 left' && printf 'crash left something behind; '
		true
	)
	if [ -n "$scale_missed" ]; then
		echo "**Missed a scale target:** ${scale_missed%; }."
	else
		echo "Every scale scenario meets its target."
	fi
	echo
	echo "## Raw JSON"
	echo
	for f in "$json_dir"/*.json; do
		[ -e "$f" ] || continue
		echo "### $(basename "$f" .json)"
		echo
		echo '```json'
		cat "$f"
		echo
		echo '```'
		echo
	done
	echo "## Raw output"
	echo
	echo '```'
	echo "$latency"
	echo
	echo "$scale"
	echo
	echo "$micro"
	echo '```'
} > docs/benchmarks.md
echo "wrote docs/benchmarks.md"
