package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkCheckpoint measures, interleaved sample by sample in one run,
// sandpool's checkpoint and restore of an idle sandbox against raw runsc
// doing the same work:
//
//   - checkpoint: {"action":"checkpoint"} -> SANDBOX_CHECKPOINTED (runsc
//     checkpoint into the store, metadata written and fsynced, container
//     deleted) vs `runsc checkpoint --image-path` + `runsc delete --force`;
//   - restore: /attach -> SANDBOX_RUNNING (WebSocket dial included; the
//     token checked, runsc restore) vs one `runsc restore --detach`.
//
// Each side cycles one sandbox: restore, then checkpoint again. Run: make
// bench (or go test -run '^$' -bench Checkpoint -benchtime 30x ./tests/).
func BenchmarkCheckpoint(b *testing.B) {
	s := startServer(b, "--checkpoint-path", benchTempDir(b, "sandpool-bench-checkpoints-"))
	raw := newRawRunsc(b)
	images := benchTempDir(b, "sandpool-bench-raw-images-")

	c, sb := createSandbox(b, s, checkpointInit(map[string]any{"idle_timeout": 600}))
	c.checkpoint(b)
	rawID := raw.start(b, "ckpt")
	image := filepath.Join(images, "0")
	rawCheckpoint := func(id, dir string) {
		out, err := raw.cmd("checkpoint", "--image-path="+dir, id).CombinedOutput()
		require.NoError(b, err, "%s", out)
		out, err = raw.cmd("delete", "--force", id).CombinedOutput()
		require.NoError(b, err, "%s", out)
	}
	rawCheckpoint(rawID, image)

	var checkpoint, rawCheckpoints, restores, rawRestores []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		interleaveSamples(i, func() {
			start := time.Now()
			c = restore(b, s, sb)
			restores = append(restores, time.Since(start))
			start = time.Now()
			c.checkpoint(b)
			checkpoint = append(checkpoint, time.Since(start))
		}, func() {
			// A fresh id each time: runsc restores an image under any id.
			id := fmt.Sprintf("%-32s", fmt.Sprintf("ckpt%d-", i)+rawID)[:32]
			log, err := os.OpenFile(filepath.Join(images, "restore.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			require.NoError(b, err)
			cmd := raw.cmd("restore", "--detach", "--image-path="+image, "--bundle="+raw.bundle, id)
			cmd.Stdout, cmd.Stderr = log, log // the sandbox inherits them: no pipe
			start := time.Now()
			err = cmd.Run()
			rawRestores = append(rawRestores, time.Since(start))
			log.Close()
			require.NoError(b, err, "runsc restore; see %s", log.Name())
			next := filepath.Join(images, fmt.Sprint(i+1))
			start = time.Now()
			rawCheckpoint(id, next)
			rawCheckpoints = append(rawCheckpoints, time.Since(start))
			require.NoError(b, os.RemoveAll(image))
			image = next
		})
	}
	b.StopTimer()
	report(b, "checkpoint", checkpoint, rawCheckpoints)
	report(b, "restore", restores, rawRestores)
}
