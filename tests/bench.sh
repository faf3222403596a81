#!/usr/bin/env bash
# Runs the latency benchmarks (sandpool vs raw runsc, interleaved in one run)
# and rewrites docs/benchmarks.md with the machine, the command and the raw
# output. Called by `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=(go test -run '^$' -bench . -benchtime "${BENCH_N:-30}x" -count 1 -timeout 30m ./tests/)
out=$("${cmd[@]}" 2>&1) || { echo "$out"; exit 1; }
echo "$out"
mkdir -p docs
{
	echo "# Benchmarks"
	echo
	echo "Written by \`make bench\` on $(date -u +%Y-%m-%dT%H:%MZ). Medians and p99 of"
	echo "${BENCH_N:-30} samples; sandpool and raw runsc are measured interleaved in the"
	echo "same run, so compare the ratios, not absolute times across runs (the"
	echo "machine is shared and noisy)."
	echo
	echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r);"
	echo "$(go version | cut -d' ' -f3); runsc $(cat bin/runsc.version 2>/dev/null || echo unknown) (systrap, --network=none, --overlay2=root:memory)."
	echo
	echo "Command: \`${cmd[*]}\`"
	echo
	echo "## Results"
	echo
	echo "| measurement | sandpool p50 | sandpool p99 | raw runsc p50 | raw runsc p99 | ratio (p50) |"
	echo "| --- | --- | --- | --- | --- | --- |"
	echo "$out" | sed -n 's/.*bench_test.go:[0-9]*: \([a-z]*\): sandpool p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms; raw runsc p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms; ratio \([0-9.]*x\).*/| \1 | \2 ms | \3 ms | \4 ms | \5 ms | \6 |/p'
	echo
	echo "* create: \`/create\` -> \`SANDBOX_RUNNING\` (cold) vs \`runsc create\` + \`runsc start\` of the same spec."
	echo "* exec: \`echo hi\` execute -> \`SANDBOX_EXECUTION_DONE\` vs one \`runsc exec bash -c 'echo hi'\`."
	echo
	echo "## Raw output"
	echo
	echo '```'
	echo "$out"
	echo '```'
} > docs/benchmarks.md
echo "wrote docs/benchmarks.md"
