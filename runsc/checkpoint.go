package runsc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Checkpoint reads the sandbox's config.json, then runs `runsc checkpoint`,
// which writes the sandbox's memory, processes and files into imageDir and
// stops it. The container still exists afterwards: the caller destroys it.
//
// What runsc does (pinned version, measured): it creates imageDir if
// missing and refuses one that already holds an image; a failed checkpoint
// may leave partial files there (the caller removes the directory). Every
// running execution ends when the sandbox stops: its `runsc exec` exits,
// with code 0.
//
// ctx bounds the call (an image grows with the sandbox's memory, so it may
// take longer than CallTimeout); without a deadline CallTimeout applies.
func (r *Runner) Checkpoint(ctx context.Context, id, imageDir string) ([]byte, error) {
	if !filepath.IsAbs(imageDir) {
		return nil, fmt.Errorf("checkpoint sandbox %s: image dir %q is not absolute", id, imageDir)
	}
	spec, err := os.ReadFile(filepath.Join(r.BundleDir(id), "config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("checkpoint sandbox %s: %w: no bundle", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint sandbox %s: spec: %w", id, err)
	}
	// A dead sandbox has nothing to save; runsc would only fail later.
	if err := r.Alive(ctx, id); err != nil {
		return nil, fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	ctx, cancel := withDefaultTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	cmd := r.command("checkpoint", "--image-path="+imageDir, id)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := startAndWait(ctx, cmd); err != nil {
		return nil, fmt.Errorf("checkpoint sandbox %s: runsc checkpoint: %w: %s", id, err, lastLine(stderr.String()))
	}
	return spec, nil
}

// Restore writes a bundle for id with spec (minus the rootfs tar
// annotation) and runs `runsc restore --detach`, which returns once the
// restored sandbox runs; its pid file makes Alive and Destroy work as for
// a created sandbox. On failure nothing is left behind; a missing or
// unreadable image gives an error matching ErrBadImage.
//
// The sandbox's memory and files come back, and so do its processes:
// gVisor kills only the processes of exec origin while restoring, which
// are the agent's relays (runsc exec's processes); the programs of
// executions, and the background jobs they left, are init's descendants
// (see execSpec). An execution still running at the checkpoint ended then
// on the host; init kills its program's group when the restore kills its
// relay. The image is not needed once Restore returned, and one image can
// be restored any number of times, under any id.
//
// ctx bounds the call as for Checkpoint.
func (r *Runner) Restore(ctx context.Context, id, imageDir string, spec []byte) error {
	if !filepath.IsAbs(imageDir) {
		return fmt.Errorf("restore sandbox %s: image dir %q is not absolute", id, imageDir)
	}
	// runsc would fail on a missing image only after setting up the
	// sandbox; checking first is cheaper and gives a clear error.
	if info, err := os.Stat(imageDir); err != nil {
		return fmt.Errorf("restore sandbox %s: %w: %w", id, ErrBadImage, err)
	} else if !info.IsDir() {
		return fmt.Errorf("restore sandbox %s: %w: %s is not a directory", id, ErrBadImage, imageDir)
	}
	config, dropped, err := restoreSpec(spec)
	if err != nil {
		return fmt.Errorf("restore sandbox %s: %w", id, err)
	}

	callCtx, cancel := withDefaultTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	var flags []string
	if dropped {
		// runsc checks that the restore spec equals the checkpointed one,
		// gVisor annotations included; the dropped tar annotation is the one
		// difference, and warning mode logs it instead of failing.
		flags = append(flags, "--restore-spec-validation=warning")
	}
	out, err := r.launch(callCtx, id, config, append(flags, "restore", "--detach", "--image-path="+imageDir)...)
	if err != nil {
		msg := restoreFailure(out)
		if callCtx.Err() == nil && isBadImage(msg) {
			return fmt.Errorf("restore sandbox %s: %w: %s", id, ErrBadImage, msg)
		}
		return fmt.Errorf("restore sandbox %s: %w: %s", id, err, msg)
	}
	return nil
}

// restoreSpec is the config.json a restore runs with: spec without the
// rootfs tar annotation (dropped reports whether it had one). A sandbox
// created from a filesystem snapshot names a tar (often a /proc/<pid>/fd
// path) that is gone by now, and the image already holds its files. Every
// other field is kept as it was.
func restoreSpec(spec []byte) (config []byte, dropped bool, err error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(spec, &fields); err != nil {
		return nil, false, fmt.Errorf("spec is not an OCI config: %w", err)
	}
	raw, ok := fields["annotations"]
	if !ok {
		return spec, false, nil
	}
	var annotations map[string]string
	if err := json.Unmarshal(raw, &annotations); err != nil {
		return nil, false, fmt.Errorf("spec annotations: %w", err)
	}
	if _, ok := annotations[RootfsTarAnnotation]; !ok {
		return spec, false, nil
	}
	delete(annotations, RootfsTarAnnotation)
	if len(annotations) == 0 {
		delete(fields, "annotations")
	} else if fields["annotations"], err = json.Marshal(annotations); err != nil {
		return nil, false, err
	}
	config, err = json.Marshal(fields)
	return config, true, err
}

// restoreFailure picks runsc's own message out of a failed restore's log.
// The sandbox shares that log and may still be printing a panic's stack
// after runsc's message, so the last line is not always runsc's; and
// runsc's message may itself go on with a stack over several lines.
func restoreFailure(log string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		for _, prefix := range restoreErrorPrefixes {
			if strings.HasPrefix(lines[i], prefix) {
				return lastLine(lines[i])
			}
		}
	}
	return lastLine(log)
}

// restoreErrorPrefixes start the messages of `runsc restore`'s failures.
var restoreErrorPrefixes = []string{"starting container: ", "creating container: ", "loading container: ", "reading spec: "}

// isBadImage reports whether runsc's restore message blames the image: it
// could not open its files ("starting container: opening state file ...",
// "opening pages file ...") or the sandbox could not load them ("starting
// container: restoring container "ID": ...": a decoding error, or EOF when
// a corrupt image crashed the sandbox).
func isBadImage(msg string) bool {
	rest, ok := strings.CutPrefix(msg, "starting container: ")
	return ok && (strings.HasPrefix(rest, "opening ") || strings.HasPrefix(rest, "restoring container "))
}

// withDefaultTimeout keeps ctx's deadline, or adds d when it has none.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
