package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	statusSnapshotCreating = "SANDBOX_FILESYSTEM_SNAPSHOT_CREATING"
	statusSnapshotCreated  = "SANDBOX_FILESYSTEM_SNAPSHOT_CREATED"
	statusSnapshotError    = "SANDBOX_FILESYSTEM_SNAPSHOT_ERROR"
	// snapshotTimeout bounds one snapshot of the sizes these tests make.
	snapshotTimeout = 2 * time.Minute
)

// startSnapshotServer starts a server with filesystem snapshots in a
// directory of its own, removed when the test ends.
func startSnapshotServer(t *testing.T, extra ...string) (*server, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sandpool-e2e-snapshots-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return startServer(t, append([]string{"--filesystem-snapshot-path", dir}, extra...)...), dir
}

// snapshotE asks for a snapshot and waits for CREATING then CREATED.
func (c *client) snapshotE(name string) error {
	if err := c.sendJSONE(map[string]any{"action": "snapshot_filesystem", "name": name}); err != nil {
		return err
	}
	for _, want := range []string{statusSnapshotCreating, statusSnapshotCreated} {
		ev, err := c.readE(snapshotTimeout)
		if err != nil {
			return fmt.Errorf("snapshot %s: waiting for %s: %w", name, want, err)
		}
		if err := wantStatus(ev, want); err != nil {
			return fmt.Errorf("snapshot %s: %w", name, err)
		}
	}
	return nil
}

func (c *client) snapshot(t testing.TB, name string) {
	t.Helper()
	require.NoError(t, c.snapshotE(name))
}

// fromSnapshot is the TypeScript client's init with a snapshot name.
func fromSnapshot(name string) map[string]any {
	init := sandboxInit(60)
	init["filesystem_snapshot_name"] = name
	return init
}

// bash runs a script that must succeed and returns its stdout.
func (c *client) bash(t testing.TB, script string) string {
	t.Helper()
	res := c.run(t, "bash", script)
	require.Equal(t, 0, res.ExitCode, "script failed: %s\nstderr: %s", truncate(script, 300), res.Stderr)
	return res.Stdout
}

// dirFiles lists a directory's entries.
func dirFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// snapshotMeta reads a snapshot's sidecar.
func snapshotMeta(t testing.TB, dir, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name+".json"))
	require.NoError(t, err)
	var meta map[string]any
	require.NoError(t, json.Unmarshal(data, &meta))
	return meta
}

// snapshotTar is the path of a snapshot's current tar.
func snapshotTar(t testing.TB, dir, name string) string {
	t.Helper()
	return filepath.Join(dir, snapshotMeta(t, dir, name)["file"].(string))
}

// buildTree changes the base rootfs in every way a snapshot must keep.
const buildTree = `set -e
echo in-tmp > /tmp/in-tmp.txt
echo in-root > /root/notes.txt
mkdir -p /srv/a/b/c && echo deep > /srv/a/b/c/file.txt
rm /etc/debian_version
echo overwritten > /etc/motd
mv /etc/issue.net /etc/issue.renamed
echo moved > /root/before.txt && mv /root/before.txt /root/after.txt
ln -s /srv/a/b/c/file.txt /root/abs-link
ln -s ../srv/a /root/rel-link
printf '#!/bin/sh\necho script-ran\n' > /root/run.sh && chmod 0755 /root/run.sh
echo secret > /root/secret && chmod 0600 /root/secret
echo owned > /srv/owned && chown 1234:5678 /srv/owned
mkdir /srv/empty
echo unicode > '/root/héllo wörld ✓.txt'
head -c 20971520 /dev/urandom > /srv/big.bin
python3 -m venv --without-pip /opt/venv
mkdir -p /opt/venv/lib/python3.11/site-packages/sandpoolmod
echo 'VALUE = "imported from the venv"' > /opt/venv/lib/python3.11/site-packages/sandpoolmod/__init__.py
`

// manifest prints, as JSON, every entry under the trees a snapshot may
// touch: type, mode, owner, size and sha256 of files, symlink targets.
const manifest = `
import hashlib, json, os, stat
out = {}
for top in ["/tmp", "/root", "/srv", "/opt", "/etc"]:
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            e = {"mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISLNK(st.st_mode):
                e["link"] = os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                e["type"] = "dir"
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    e["sha256"] = hashlib.sha256(f.read()).hexdigest()
                e["size"] = st.st_size
            else:
                e["type"] = "other"
            out[p] = e
print(json.dumps(out, sort_keys=True))
`

func TestSnapshotRestoresTheExactTree(t *testing.T) {
	s, dir := startSnapshotServer(t)
	a, src := createSandbox(t, s, sandboxInit(120))
	a.bash(t, buildTree)
	before := a.run(t, "python", manifest)
	require.Equal(t, 0, before.ExitCode, before.Stderr)
	a.snapshot(t, "tree")

	// The metadata describes the tar that was written.
	meta := snapshotMeta(t, dir, "tree")
	tarPath := filepath.Join(dir, meta["file"].(string))
	data, err := os.ReadFile(tarPath)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	assert.Equal(t, hex.EncodeToString(sum[:]), meta["sha256"])
	assert.Equal(t, float64(len(data)), meta["size"])
	assert.Equal(t, src.ID, meta["source_sandbox"])
	assert.Equal(t, runscPin(t), meta["runsc_version"])
	assert.NotEmpty(t, meta["created"])
	assert.ElementsMatch(t, []string{"tree.json", meta["file"].(string)}, dirFiles(t, dir), "no temporary files")

	b, _ := createSandbox(t, s, fromSnapshot("tree"))
	after := b.run(t, "python", manifest)
	require.Equal(t, 0, after.ExitCode, after.Stderr)
	assert.Empty(t, manifestDiff(t, before.Stdout, after.Stdout), "the restored tree differs from the snapshotted one")

	// The same facts, spelled out so a failure says which one broke.
	for _, check := range []struct{ name, script, want string }{
		{"file in /tmp", "cat /tmp/in-tmp.txt", "in-tmp\n"},
		{"file in /root", "cat /root/notes.txt", "in-root\n"},
		{"new nested dir", "cat /srv/a/b/c/file.txt", "deep\n"},
		{"deleted base file stays deleted", "test -e /etc/debian_version && echo present || echo absent", "absent\n"},
		{"overwritten base file", "cat /etc/motd", "overwritten\n"},
		{"renamed base file", "test -e /etc/issue.net || cat /etc/issue.renamed | head -c 6", "Debian"},
		{"rename", "test -e /root/before.txt || cat /root/after.txt", "moved\n"},
		{"absolute symlink", "readlink /root/abs-link; cat /root/abs-link", "/srv/a/b/c/file.txt\ndeep\n"},
		{"relative symlink", "readlink /root/rel-link; cat /root/rel-link/b/c/file.txt", "../srv/a\ndeep\n"},
		{"0755 script", "stat -c %a /root/run.sh; /root/run.sh", "755\nscript-ran\n"},
		{"0600 file", "stat -c %a /root/secret", "600\n"},
		{"owner", "stat -c %u:%g /srv/owned", "1234:5678\n"},
		{"empty directory", "test -d /srv/empty && ls -A /srv/empty | wc -l", "0\n"},
		{"unicode name", "cat '/root/héllo wörld ✓.txt'", "unicode\n"},
		{"venv module", "/opt/venv/bin/python -c 'import sandpoolmod, sys; print(sandpoolmod.VALUE, sys.prefix)'", "imported from the venv /opt/venv\n"},
	} {
		assert.Equal(t, check.want, b.bash(t, check.script), check.name)
	}
	bigA := a.bash(t, "sha256sum /srv/big.bin")
	assert.Equal(t, bigA, b.bash(t, "sha256sum /srv/big.bin"), "20 MiB file")
	assert.Equal(t, "20971520\n", b.bash(t, "stat -c %s /srv/big.bin"))
}

// manifestDiff lists the paths whose entries differ between two manifests
// (at most 20, so a failure stays readable).
func manifestDiff(t *testing.T, wantJSON, gotJSON string) []string {
	t.Helper()
	var want, got map[string]any
	require.NoError(t, json.Unmarshal([]byte(wantJSON), &want))
	require.NoError(t, json.Unmarshal([]byte(gotJSON), &got))
	var diffs []string
	for path, w := range want {
		if g, ok := got[path]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: missing (was %v)", path, w))
		} else if fmt.Sprint(g) != fmt.Sprint(w) {
			diffs = append(diffs, fmt.Sprintf("%s: %v, was %v", path, g, w))
		}
	}
	for path, g := range got {
		if _, ok := want[path]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: unexpected %v", path, g))
		}
	}
	slices.Sort(diffs)
	return diffs[:min(len(diffs), 20)]
}

// runscPin is the version `make runsc` recorded.
func runscPin(t testing.TB) string {
	data, err := os.ReadFile(runscBinary + ".version")
	require.NoError(t, err)
	return strings.TrimSpace(string(data))
}

func TestSnapshotChain(t *testing.T) {
	s, _ := startSnapshotServer(t)
	a, _ := createSandbox(t, s, sandboxInit(120))
	a.bash(t, "mkdir -p /chain && echo from-a > /chain/a && echo base-change > /etc/motd")
	a.snapshot(t, "chain-a")

	b, _ := createSandbox(t, s, fromSnapshot("chain-a"))
	b.bash(t, "echo from-b > /chain/b && rm /etc/motd")
	b.snapshot(t, "chain-b")

	c, _ := createSandbox(t, s, fromSnapshot("chain-b"))
	assert.Equal(t, "from-a\nfrom-b\n", c.bash(t, "cat /chain/a /chain/b"), "both A's and B's changes")
	assert.Equal(t, "absent\n", c.bash(t, "test -e /etc/motd && echo present || echo absent"), "B's deletion of A's change")

	// A is unchanged by B.
	a2, _ := createSandbox(t, s, fromSnapshot("chain-a"))
	assert.Equal(t, "from-a\nbase-change\nno-b\n", a2.bash(t, "cat /chain/a /etc/motd; test -e /chain/b || echo no-b"))
}

func TestConcurrentSnapshotsAndReplacingOne(t *testing.T) {
	s, dir := startSnapshotServer(t)
	one, _ := createSandbox(t, s, sandboxInit(120))
	two, _ := createSandbox(t, s, sandboxInit(120))
	one.bash(t, "echo one > /root/who && head -c 5242880 /dev/urandom > /root/pad")
	two.bash(t, "echo two > /root/who && head -c 5242880 /dev/urandom > /root/pad")

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, c := range []*client{one, two} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.snapshotE([]string{"snap-one", "snap-two"}[i])
		}()
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	for name, want := range map[string]string{"snap-one": "one\n", "snap-two": "two\n"} {
		c, _ := createSandbox(t, s, fromSnapshot(name))
		assert.Equal(t, want, c.bash(t, "cat /root/who"), name)
		c.killSandbox(t)
	}

	// The same name twice in a row keeps the second; the first tar is gone.
	one.bash(t, "echo first > /root/version")
	one.snapshot(t, "same")
	one.bash(t, "echo second > /root/version")
	one.snapshot(t, "same")
	c, _ := createSandbox(t, s, fromSnapshot("same"))
	assert.Equal(t, "second\n", c.bash(t, "cat /root/version"))
	var sameFiles []string
	for _, f := range dirFiles(t, dir) {
		if strings.HasPrefix(f, "same") {
			sameFiles = append(sameFiles, f)
		}
	}
	assert.Len(t, sameFiles, 2, "one sidecar and one tar: %v", sameFiles)
}

func TestSnapshotWhileExecuting(t *testing.T) {
	s, _ := startSnapshotServer(t)
	c, _ := createSandbox(t, s, sandboxInit(120))
	c.bash(t, "echo before-run > /root/state")
	c.sendJSON(t, execRequest("bash", "echo started; cat; echo finished"))
	c.expectStatus(t, statusExecRunning)
	ev := c.next(t, eventTimeout)
	require.Equal(t, "started\n", ev.Data, "got %s", ev)

	c.snapshot(t, "mid-run")
	c.sendJSON(t, map[string]any{"event": "stdin", "data": "input\n"})
	c.sendJSON(t, map[string]any{"action": "close_stdin"})
	res := c.collect(t)
	assert.Equal(t, "input\nfinished\n", res.Stdout)

	r, _ := createSandbox(t, s, fromSnapshot("mid-run"))
	assert.Equal(t, "before-run\n", r.bash(t, "cat /root/state"))
}

func TestKillDuringLongSnapshot(t *testing.T) {
	s, dir := startSnapshotServer(t)
	c, _ := createSandbox(t, s, sandboxInit(120))
	// Enough data for a snapshot of seconds. Written data, not a sparse or
	// fallocated file: runsc takes seconds to stop a sandbox that is
	// reading those into a tar, whoever asks (measured: delete --force
	// 4-11 s on raw runsc, against 0.25 s with written data).
	c.run(t, "python", "open('/root/big', 'wb').write(b'x' * 700_000_000)")
	c.sendJSON(t, map[string]any{"action": "snapshot_filesystem", "name": "doomed"})
	c.expectStatus(t, statusSnapshotCreating)
	require.Eventually(t, func() bool {
		written := false
		_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if info, ierr := d.Info(); err == nil && ierr == nil && info.Mode().IsRegular() && info.Size() > 0 {
				written = true
			}
			return nil
		})
		return written
	}, eventTimeout, 10*time.Millisecond, "the snapshot is being written")

	start := time.Now()
	c.sendJSON(t, map[string]any{"action": "kill_sandbox"})
	c.expectStatuses(t, eventTimeout, statusKilling, statusDeleting, statusDeleted, statusKilled)
	assert.Less(t, time.Since(start), 2*time.Second, "a kill wins over a long snapshot within 2 s")
	c.expectClose(t, closeNormal)
	assert.Empty(t, dirFiles(t, dir), "no partial snapshot, no temporary file")
	assertNothingLeft(t, s)
}

// assertNothingLeft checks the server holds no container and no bundle.
func assertNothingLeft(t *testing.T, s *server) {
	t.Helper()
	assertNoContainers(t, s, eventTimeout)
	bundles, err := os.ReadDir(filepath.Join(s.stateDir, "bundles"))
	require.NoError(t, err)
	assert.Empty(t, bundles, "bundles left behind")
}

func TestSnapshotBadRequests(t *testing.T) {
	s, dir := startSnapshotServer(t)
	c, _ := createSandbox(t, s, sandboxInit(120))
	for _, tc := range []struct {
		name string
		msg  map[string]any
		want string
	}{
		{"missing name", map[string]any{"action": "snapshot_filesystem"}, "'name' is required"},
		{"parent directory", map[string]any{"action": "snapshot_filesystem", "name": "../x"}, "Invalid snapshot name"},
		{"slash", map[string]any{"action": "snapshot_filesystem", "name": "a/b"}, "Invalid snapshot name"},
		{"200 characters", map[string]any{"action": "snapshot_filesystem", "name": strings.Repeat("x", 200)}, "Invalid snapshot name"},
		{"a number", map[string]any{"action": "snapshot_filesystem", "name": 42}, "'name' must be a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.sendJSON(t, tc.msg)
			ev := c.expectError(t, statusSnapshotError)
			assert.Contains(t, ev.Message, tc.want)
		})
	}
	assert.Equal(t, "still open\n", c.bash(t, "echo still open"), "the connection stays usable")
	assert.Empty(t, dirFiles(t, dir), "nothing written for a bad name")
	_, err := os.Stat(filepath.Join(filepath.Dir(dir), "x"))
	assert.ErrorIs(t, err, os.ErrNotExist, "../x escaped the snapshot directory")
}

func TestSnapshotsDisabledServer(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(120))
	c.sendJSON(t, map[string]any{"action": "snapshot_filesystem", "name": "base"})
	ev := c.expectError(t, statusSnapshotError)
	assert.Equal(t, "Filesystem snapshot is not enabled on the server.", ev.Message)
	assert.Equal(t, "open\n", c.bash(t, "echo open"))
	c.killSandbox(t)

	d := mustDial(t, s, "/create")
	d.sendJSON(t, fromSnapshot("base"))
	d.expectStatus(t, statusCreating)
	ev = d.expectError(t, statusCreationError)
	assert.Equal(t, "Filesystem snapshot is not enabled on the server.", ev.Message)
	d.expectClose(t, closeError)
	assertNothingLeft(t, s)
}

func TestCreateFromMissingOrCorruptSnapshot(t *testing.T) {
	s, dir := startSnapshotServer(t)
	src, _ := createSandbox(t, s, sandboxInit(120))
	src.bash(t, "echo data > /root/data")
	src.snapshot(t, "garbled")
	src.snapshot(t, "truncated")
	src.killSandbox(t)

	// Same size, garbage content: only runsc can tell.
	garbled := snapshotTar(t, dir, "garbled")
	st, err := os.Stat(garbled)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(garbled, []byte(strings.Repeat("not a tar ", int(st.Size())/10+1)[:st.Size()]), 0o600))
	truncated := snapshotTar(t, dir, "truncated")
	require.NoError(t, os.Truncate(truncated, 100))
	before := dirFiles(t, dir)

	for _, tc := range []struct{ name, snapshot, want string }{
		{"missing", "nope", "Filesystem snapshot not found: nope"},
		{"garbled tar", "garbled", "Filesystem snapshot is corrupt: garbled: "},
		{"truncated tar", "truncated", "Filesystem snapshot is corrupt: truncated: the tar has 100 bytes"},
		{"bad name", "../etc", "Filesystem snapshot not found: ../etc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustDial(t, s, "/create")
			c.sendJSON(t, fromSnapshot(tc.snapshot))
			c.expectStatus(t, statusCreating)
			ev := c.expectError(t, statusCreationError)
			assert.Contains(t, ev.Message, tc.want)
			c.expectClose(t, closeError)
			assertNothingLeft(t, s)
		})
	}
	assert.Equal(t, before, dirFiles(t, dir), "failed creates leave the snapshot directory alone")
}

func TestSnapshotsCommand(t *testing.T) {
	s, dir := startSnapshotServer(t)
	c, _ := createSandbox(t, s, sandboxInit(120))
	c.bash(t, "echo x > /root/x")
	c.snapshot(t, "listed")
	c.snapshot(t, "removed")

	sandpool := func(args ...string) (string, error) {
		cmd := exec.Command(serverBinary, append([]string{"snapshots"}, args...)...)
		cmd.Env = append(os.Environ(), "SANDPOOL_FILESYSTEM_SNAPSHOT_PATH="+dir)
		out, err := cmd.Output()
		return string(out), err
	}
	out, err := sandpool("list", "--json")
	require.NoError(t, err)
	var infos []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &infos))
	require.Len(t, infos, 2)
	assert.Equal(t, "listed", infos[0]["name"])

	out, err = sandpool("list")
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^listed\s+\d`, out)

	out, err = sandpool("rm", "removed")
	require.NoError(t, err)
	assert.Equal(t, "removed removed\n", out)
	_, err = sandpool("rm", "removed")
	assert.Error(t, err, "removing a missing snapshot fails")

	// The running server sees the removal.
	d := mustDial(t, s, "/create")
	d.sendJSON(t, fromSnapshot("removed"))
	d.expectStatus(t, statusCreating)
	ev := d.expectError(t, statusCreationError)
	assert.Equal(t, "Filesystem snapshot not found: removed", ev.Message)
}

func TestServerRemovesInterruptedSnapshotFiles(t *testing.T) {
	dir, err := os.MkdirTemp("", "sandpool-e2e-snapshots-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	// What a server killed in the middle of a snapshot leaves.
	old := time.Now().Add(-time.Hour) // an orphan tar is only taken for one after a while
	for _, name := range []string{".tmp-x-123.tar", "x@0011223344556677.tar"} {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte("partial"), 0o600))
		require.NoError(t, os.Chtimes(path, old, old))
	}
	startServer(t, "--filesystem-snapshot-path", dir)
	assert.Empty(t, dirFiles(t, dir))
}
