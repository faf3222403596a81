#!/usr/bin/env bash
# Runs the latency benchmarks (sandpool vs raw runsc, interleaved in one run)
# and rewrites docs/benchmarks.md with the machine, the command and the raw
# output. Called by `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=(go test -v -run '^$' -bench . -benchtime "${BENCH_N:-30}x" -count 1 -timeout 30m ./tests/)
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
	echo "## Raw output"
	echo
	echo '```'
	echo "$out"
	echo '```'
} > docs/benchmarks.md
echo "wrote docs/benchmarks.md"
