// Package tests holds sandpool's end-to-end tests: each test starts the real
// server binary with the real runsc and rootfs and talks to it over
// WebSocket and HTTP, exactly as a client would.
//
// Run as root after `make runsc rootfs`: `go test -timeout 15m ./tests/`.
// TestMain builds ./cmd/sandpool once (or uses $SANDPOOL_E2E_BINARY); each
// test starts its own server on a random port with its own state dir. When
// runsc or the rootfs is missing the tests skip, except under CI=true where
// the run fails.
//
// Tests run sequentially: several of them check timings (kill within 1 s,
// idle reaping) that would turn flaky on a 2-core machine shared by parallel
// gVisor sandboxes.
package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"testing"
)

// Paths resolved once by TestMain.
var (
	repoRoot     string // the module root (parent of tests/)
	serverBinary string // sandpool built from ./cmd/sandpool for this run
	runscBinary  string // <repo>/bin/runsc, built by `make runsc`
	rootfsDir    string // <repo>/build/rootfs, built by `make rootfs`

	// skipReason is set when the prerequisites are missing outside CI: every
	// test then skips instead of failing.
	skipReason string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: resolve repo root:", err)
		return 1
	}
	repoRoot = root
	runscBinary = filepath.Join(repoRoot, "bin", "runsc")
	rootfsDir = filepath.Join(repoRoot, "build", "rootfs")

	if missing := missingPrerequisites(); missing != "" {
		// CI must exercise the real runtime: a missing runsc there is a
		// broken pipeline, not a reason to go green.
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "e2e: %s (CI=true, failing; run `make runsc rootfs`)\n", missing)
			return 1
		}
		skipReason = missing + " (run `make runsc rootfs` as root to enable the end-to-end tests)"
		return m.Run()
	}

	buildDir, err := os.MkdirTemp("", "sandpool-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(buildDir)

	// SANDPOOL_E2E_BINARY runs the suite against a prebuilt server (for
	// example one built with -race) instead of building ./cmd/sandpool.
	if prebuilt := os.Getenv("SANDPOOL_E2E_BINARY"); prebuilt != "" {
		serverBinary = prebuilt
		return m.Run()
	}
	serverBinary = filepath.Join(buildDir, "sandpool")
	if err := buildServer(serverBinary); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// missingPrerequisites names the first thing the real-runsc tests cannot run
// without, or returns "" when everything is in place.
func missingPrerequisites() string {
	if os.Geteuid() != 0 {
		return "runsc needs root and the tests are not running as root"
	}
	if info, err := os.Stat(runscBinary); err != nil || info.Mode()&0o111 == 0 {
		return fmt.Sprintf("runsc binary missing or not executable at %s", runscBinary)
	}
	// The markers are written last by `make rootfs`: a half-built rootfs,
	// or one without the python stdio fix, lacks them.
	for _, marker := range []string{".sandpool-rootfs", ".sandpool-stdio"} {
		if _, err := os.Stat(filepath.Join(rootfsDir, marker)); err != nil {
			return fmt.Sprintf("rootfs missing or incomplete at %s (no %s)", rootfsDir, marker)
		}
	}
	return ""
}

func buildServer(out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	goTool := os.Getenv("GO")
	if goTool == "" {
		goTool = "go"
	}
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, goTool, append(args, "./cmd/sandpool")...)
	cmd.Dir = repoRoot
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/sandpool: %w\n%s", err, output)
	}
	return nil
}

// requirePrerequisites skips (or, under CI, never reaches here because
// TestMain already failed) when the real runtime is unavailable.
func requirePrerequisites(t testing.TB) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
