package runsc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFindBinaryConfigured(t *testing.T) {
	dir := t.TempDir()
	exe := writeScript(t, dir, "runsc", "#!/bin/sh\n")
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "adir"), 0o755))

	for _, tc := range []struct {
		name    string
		path    string
		want    string
		wantErr string
	}{
		{"explicit path", exe, exe, ""},
		{"explicit path with dots", filepath.Join(dir, "adir", "..", "runsc"), exe, ""},
		{"missing", filepath.Join(dir, "nope"), "", "make runsc"},
		{"not executable", plain, "", "make runsc"},
		{"directory", filepath.Join(dir, "adir"), "", "make runsc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FindBinary(tc.path)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestFindBinaryRelativePathIsMadeAbsolute(t *testing.T) {
	dir := t.TempDir()
	exe := writeScript(t, dir, "runsc", "#!/bin/sh\n")
	t.Chdir(dir)

	got, err := FindBinary("./runsc")
	require.NoError(t, err)
	assert.True(t, filepath.IsAbs(got), got)
	assertSameFile(t, exe, got)
}

func TestFindBinaryBareNameUsesPATH(t *testing.T) {
	dir := t.TempDir()
	exe := writeScript(t, dir, "my-runsc", "#!/bin/sh\n")
	t.Setenv("PATH", dir)

	got, err := FindBinary("my-runsc")
	require.NoError(t, err)
	assert.Equal(t, exe, got)

	_, err = FindBinary("other-runsc")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not found in PATH")
	assert.Contains(t, err.Error(), "make runsc")
}

func TestFindBinaryDefaults(t *testing.T) {
	t.Run("bin/runsc in the working directory", func(t *testing.T) {
		wd := t.TempDir()
		require.NoError(t, os.Mkdir(filepath.Join(wd, "bin"), 0o755))
		exe := writeScript(t, filepath.Join(wd, "bin"), "runsc", "#!/bin/sh\n")
		// A runsc in PATH must lose to the project's pinned one.
		pathDir := t.TempDir()
		writeScript(t, pathDir, "runsc", "#!/bin/sh\n")
		t.Setenv("PATH", pathDir)
		t.Chdir(wd)

		got, err := FindBinary("")
		require.NoError(t, err)
		assertSameFile(t, exe, got)
	})
	t.Run("PATH", func(t *testing.T) {
		t.Chdir(t.TempDir())
		pathDir := t.TempDir()
		exe := writeScript(t, pathDir, "runsc", "#!/bin/sh\n")
		t.Setenv("PATH", pathDir)

		got, err := FindBinary("")
		require.NoError(t, err)
		assert.Equal(t, exe, got)
	})
	t.Run("nowhere", func(t *testing.T) {
		t.Chdir(t.TempDir())
		t.Setenv("PATH", t.TempDir())

		_, err := FindBinary("")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "make runsc")
	})
}

func assertSameFile(t *testing.T, want, got string) {
	t.Helper()
	a, err := os.Stat(want)
	require.NoError(t, err)
	b, err := os.Stat(got)
	require.NoError(t, err)
	assert.True(t, os.SameFile(a, b), "want %s, got %s", want, got)
}

func TestCheckFeatures(t *testing.T) {
	for _, tc := range []struct {
		name        string
		script      string
		wantErr     bool
		wantMissing bool
	}{
		{
			name: "pinned runsc",
			script: `[ "$1 $2" = "help tar" ] || exit 64
echo "Usage: tar rootfs-upper --file <path> <container-id>"`,
		},
		{
			// Some versions print help and still exit non-zero.
			name:   "help exits non-zero",
			script: `echo "  rootfs-upper   tars the rootfs upper layer" >&2; exit 2`,
		},
		{
			name:        "old runsc",
			script:      `echo "flag provided but not defined: tar"; exit 2`,
			wantErr:     true,
			wantMissing: true,
		},
		{
			name:        "silent success",
			script:      `exit 0`,
			wantErr:     true,
			wantMissing: true,
		},
		{
			// Nothing to judge by: report the failure, not a feature gap.
			name:    "crashes silently",
			script:  `exit 1`,
			wantErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := writeScript(t, t.TempDir(), "runsc", "#!/bin/sh\n"+tc.script+"\n")
			err := CheckFeatures(context.Background(), bin)
			if !tc.wantErr {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tc.wantMissing, errors.Is(err, ErrMissingFeature), "err: %v", err)
			assert.Contains(t, err.Error(), bin)
		})
	}
}

func TestCheckFeaturesMissingBinary(t *testing.T) {
	err := CheckFeatures(context.Background(), filepath.Join(t.TempDir(), "nope"))
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrMissingFeature)
}
