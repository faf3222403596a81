package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/runsc"
)

// snapshotBenchSizes are the amounts of random data, in MiB, written into
// the sandboxes whose filesystems BenchmarkSnapshot snapshots and restores.
var snapshotBenchSizes = []int{1, 50, 200}

// BenchmarkSnapshot measures, interleaved sample by sample in one run,
// sandpool's filesystem snapshots against raw runsc doing the same work:
//
//   - snapshot: snapshot_filesystem -> SANDBOX_FILESYSTEM_SNAPSHOT_CREATED
//     (runsc tar into the store, hashed while written, fsynced, renamed into
//     place) vs one `runsc tar rootfs-upper --file` into a fresh file;
//   - restore: /create with filesystem_snapshot_name -> SANDBOX_RUNNING vs
//     `runsc --allow-rootfs-tar-annotation create` + `runsc start` of a
//     bundle whose spec names that tar.
//
// Each size has a long-lived sandbox on each side holding that much random
// data in /root/data. Restored sandboxes are killed (raw: deleted) after
// each sample, untimed. Which side goes first alternates every iteration.
// Run: make bench (or go test -run '^$' -bench Snapshot -benchtime 30x
// ./tests/).
func BenchmarkSnapshot(b *testing.B) {
	snapDir := benchTempDir(b, "sandpool-bench-snapshots-")
	s := startServer(b, "--max-sandboxes", "16", "--filesystem-snapshot-path", snapDir)
	raw := newRawRunsc(b)
	// Next to the store (same filesystem), so both sides write to the same disk.
	tarDir := benchTempDir(b, "sandpool-bench-rawtar-")

	type side struct {
		size                  string // "1MiB", ...
		bytes                 int
		snapName              string  // sandpool's snapshot name
		conn                  *client // sandpool sandbox holding the data
		rawID                 string  // raw sandbox holding the data
		rawTar                string  // where raw writes its snapshot
		rawBundle             string  // raw bundle restoring rawTar
		snapshot, rawSnapshot []time.Duration
		rawDurable            []time.Duration // raw tar, then fsync of it
		restore, rawRestore   []time.Duration
	}
	var sides []*side
	for _, mib := range snapshotBenchSizes {
		size := fmt.Sprintf("%dMiB", mib)
		sd := &side{
			size:     size,
			bytes:    mib << 20,
			snapName: "bench-" + size,
			rawTar:   filepath.Join(tarDir, "raw-"+size+".tar"),
		}
		sd.rawBundle = raw.writeBundle(b, "restore-"+size, runsc.SpecConfig{
			Rootfs:      rootfsDir,
			Annotations: map[string]string{runsc.RootfsTarAnnotation: sd.rawTar},
		})
		write := fmt.Sprintf("head -c %d /dev/urandom > /root/data", sd.bytes)

		c, _ := createSandbox(b, s, sandboxInit(600))
		res := c.run(b, "bash", write)
		require.Equal(b, 0, res.ExitCode, "%s: %s", write, res.Stderr)
		sd.conn = c
		// The sandbox is killed by the server's shutdown when the benchmark ends.

		sd.rawID = raw.start(b, "data"+size)
		out, err := raw.cmd("exec", sd.rawID, "bash", "-c", write).CombinedOutput()
		require.NoError(b, err, "%s", out)
		sides = append(sides, sd)
	}
	defer func() {
		for _, sd := range sides {
			raw.delete(b, sd.rawID)
		}
	}()

	// The setup of the others kept each connection unread for a while (a Go
	// client answers pings only while reading): one round trip each before
	// the server would take them for dead.
	for _, sd := range sides {
		sd.conn.bash(b, "true")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, sd := range sides {
			verify := i == 0 // check once that the restored sandboxes hold the data
			want := strconv.Itoa(sd.bytes)

			ours := func() {
				begin := time.Now()
				benchSnapshot(b, sd.conn, sd.snapName)
				sd.snapshot = append(sd.snapshot, time.Since(begin))
			}
			theirs := func() {
				begin := time.Now()
				out, err := raw.cmd("tar", "rootfs-upper", "--file="+sd.rawTar, sd.rawID).CombinedOutput()
				sd.rawSnapshot = append(sd.rawSnapshot, time.Since(begin))
				require.NoError(b, err, "runsc tar: %s", out)
				// The durable floor: sandpool must fsync what it keeps.
				f, err := os.Open(sd.rawTar)
				require.NoError(b, err)
				require.NoError(b, f.Sync())
				require.NoError(b, f.Close())
				sd.rawDurable = append(sd.rawDurable, time.Since(begin))
			}
			interleaveSamples(i, ours, theirs)

			ours = func() {
				begin := time.Now()
				c, _ := createSandbox(b, s, fromSnapshot(sd.snapName))
				sd.restore = append(sd.restore, time.Since(begin))
				if verify {
					res := c.run(b, "bash", "stat -c %s /root/data")
					require.Equal(b, want+"\n", res.Stdout, "restored /root/data size; stderr %q", res.Stderr)
				}
				c.killSandbox(b)
			}
			theirs = func() {
				begin := time.Now()
				id := raw.startBundle(b, sd.rawBundle, fmt.Sprintf("r%d-", i), "--allow-rootfs-tar-annotation")
				sd.rawRestore = append(sd.rawRestore, time.Since(begin))
				if verify {
					out, err := raw.cmd("exec", id, "stat", "-c", "%s", "/root/data").CombinedOutput()
					require.NoError(b, err, "%s", out)
					require.Equal(b, want, strings.TrimSpace(string(out)), "raw restored /root/data size")
				}
				raw.delete(b, id)
			}
			interleaveSamples(i, ours, theirs)
			require.NoError(b, os.Remove(sd.rawTar))
		}
	}
	b.StopTimer()
	for _, sd := range sides {
		report(b, "snapshot-"+sd.size, sd.snapshot, sd.rawSnapshot)
		report(b, "snapshot-"+sd.size+"-vs-tar+fsync", sd.snapshot, sd.rawDurable)
		report(b, "restore-"+sd.size, sd.restore, sd.rawRestore)
	}
}

// interleaveSamples runs both samples, sandpool's first on even iterations
// and raw runsc's first on odd ones, so neither side always runs right after
// the other's disk writes.
func interleaveSamples(i int, ours, raw func()) {
	if i%2 == 0 {
		ours()
		raw()
	} else {
		raw()
		ours()
	}
}

// benchSnapshot takes a filesystem snapshot of c's sandbox under name
// and waits until it is created.
func benchSnapshot(b *testing.B, c *client, name string) {
	b.Helper()
	c.sendJSON(b, map[string]any{"action": "snapshot_filesystem", "name": name})
	c.expectStatus(b, actors.StatusSnapshotCreating)
	ev := c.next(b, 5*time.Minute)
	require.True(b, ev.isStatus(actors.StatusSnapshotCreated), "want %s, got %s", actors.StatusSnapshotCreated, ev)
}

// benchTempDir is a fresh directory removed when the benchmark ends.
func benchTempDir(b *testing.B, prefix string) string {
	dir, err := os.MkdirTemp("", prefix)
	require.NoError(b, err)
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
