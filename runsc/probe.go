package runsc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// FindBinary resolves the runsc to use. An explicit path must exist; a bare
// name is looked up in PATH. With nothing configured it tries bin/runsc in
// the working directory, next to the running executable, then PATH.
func FindBinary(configured string) (string, error) {
	const hint = "run `make runsc` to build the pinned version, or set runsc_path / --runsc"
	if configured != "" {
		path := configured
		if !strings.Contains(configured, "/") {
			p, err := exec.LookPath(configured)
			if err != nil {
				return "", fmt.Errorf("runsc %q not found in PATH: %s", configured, hint)
			}
			path = p
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", err
		}
		if !isExecutable(abs) {
			return "", fmt.Errorf("runsc not found at %s: %s", abs, hint)
		}
		return abs, nil
	}
	var candidates []string
	if wd, err := os.Getwd(); err == nil {
		candidates = append(candidates, filepath.Join(wd, "bin", "runsc"))
	}
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), "runsc"))
	}
	for _, c := range candidates {
		if isExecutable(c) {
			return c, nil
		}
	}
	if p, err := exec.LookPath("runsc"); err == nil {
		return filepath.Abs(p)
	}
	return "", fmt.Errorf("runsc not found (looked in bin/runsc, next to sandpool, and PATH): %s", hint)
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// CheckFeatures fails with ErrMissingFeature when binary lacks what sandpool
// relies on (`tar rootfs-upper`, which Debian's old runsc does not have).
func CheckFeatures(ctx context.Context, binary string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "help", "tar").CombinedOutput()
	if err != nil && len(out) == 0 {
		return fmt.Errorf("running %s: %w", binary, err)
	}
	if !strings.Contains(string(out), "rootfs-upper") {
		return fmt.Errorf("%s: %w: no `tar rootfs-upper` (too old; run `make runsc` for the pinned version)", binary, ErrMissingFeature)
	}
	return nil
}

// PinnedVersion is the version binary was built from, as `make runsc`
// records it next to the binary (runsc.version): builds from the module
// proxy print VERSION_MISSING themselves. It is "unknown" without a record.
func PinnedVersion(binary string) string {
	data, err := os.ReadFile(binary + ".version")
	if v := strings.TrimSpace(string(data)); err == nil && v != "" {
		return v
	}
	return "unknown"
}
