package main

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeRootfs makes a directory that passes the rootfs check.
func fakeRootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bin", "sh"), []byte("#!/bin/true\n"), 0o755))
	return dir
}

// envFrom is a getenv over a map, so tests never see the real environment.
func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// testEnv is a getenv with rootfs, env, and a config file holding file
// (when not empty).
func testEnv(t *testing.T, rootfs string, env map[string]string, file string) func(string) string {
	t.Helper()
	all := map[string]string{"SANDPOOL_ROOTFS": rootfs}
	for k, v := range env {
		all[k] = v
	}
	if file != "" {
		all["SANDPOOL_CONFIG"] = writeConfig(t, "c.yaml", file)
	}
	return envFrom(all)
}

func writeConfig(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return path
}

func TestDefaultConfig(t *testing.T) {
	rootfs := fakeRootfs(t)
	cfg, err := loadConfig(nil, envFrom(map[string]string{"SANDPOOL_ROOTFS": rootfs}))
	require.NoError(t, err)

	want := defaultConfig()
	want.RootfsPath = rootfs
	assert.Equal(t, want, cfg)
	assert.Equal(t, "127.0.0.1:8080", cfg.Listen, "loopback only unless asked")
	assert.Equal(t, "/var/lib/sandpool", cfg.StateDir)
	assert.Equal(t, "systrap", cfg.Platform)
	assert.Equal(t, 100, cfg.MaxSandboxes)
	assert.Equal(t, 5*time.Minute, seconds(cfg.IdleTimeout))
	assert.Equal(t, int64(8<<20), cfg.MaxMessageBytes)
	assert.Equal(t, 30*time.Second, seconds(cfg.ShutdownTimeout))
	assert.Equal(t, "info", cfg.LogLevel)
	assert.Equal(t, "auto", cfg.LogFormat)
	assert.Empty(t, cfg.RunscPath, "empty means search bin/runsc, then PATH")
}

func TestConfigPrecedence(t *testing.T) {
	fileRootfs, envRootfs, flagRootfs := fakeRootfs(t), fakeRootfs(t), fakeRootfs(t)
	file := writeConfig(t, "sandpool.yaml", `
listen: 0.0.0.0:1000
state_dir: /file/state
runsc_path: /file/runsc
rootfs_path: `+fileRootfs+`
platform: ptrace
max_sandboxes: 10
idle_timeout: 10
max_message_bytes: 2097152
shutdown_timeout: 5
log_level: debug
log_format: json
`)
	env := map[string]string{
		"SANDPOOL_CONFIG":        file,
		"SANDPOOL_LISTEN":        "0.0.0.0:2000",
		"SANDPOOL_STATE_DIR":     "/env/state",
		"SANDPOOL_ROOTFS":        envRootfs,
		"SANDPOOL_MAX_SANDBOXES": "20",
		"SANDPOOL_IDLE_TIMEOUT":  "20.5",
		"SANDPOOL_LOG_LEVEL":     "warn",
	}
	flags := []string{"--listen", "0.0.0.0:3000", "--rootfs", flagRootfs, "--idle-timeout", "0", "--log-format=console"}

	cfg, err := loadConfig(flags, envFrom(env))
	require.NoError(t, err)

	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"listen: flag over env over file", cfg.Listen, "0.0.0.0:3000"},
		{"rootfs: flag over env over file", cfg.RootfsPath, flagRootfs},
		{"idle timeout: flag 0 (never) still overrides", cfg.IdleTimeout, 0.0},
		{"log format: flag over file", cfg.LogFormat, "console"},
		{"state dir: env over file", cfg.StateDir, "/env/state"},
		{"max sandboxes: env over file", cfg.MaxSandboxes, 20},
		{"log level: env over file", cfg.LogLevel, "warn"},
		{"runsc: file over default", cfg.RunscPath, "/file/runsc"},
		{"platform: file over default", cfg.Platform, "ptrace"},
		{"max message bytes: file over default", cfg.MaxMessageBytes, int64(2 << 20)},
		{"shutdown timeout: file over default", cfg.ShutdownTimeout, 5.0},
	} {
		assert.Equal(t, tc.want, tc.got, tc.field)
	}
}

func TestConfigFileFlagBeatsEnv(t *testing.T) {
	rootfs := fakeRootfs(t)
	fromEnv := writeConfig(t, "env.yaml", "max_sandboxes: 1\n")
	fromFlag := writeConfig(t, "flag.yaml", "max_sandboxes: 2\n")

	cfg, err := loadConfig([]string{"--config", fromFlag, "--rootfs", rootfs}, envFrom(map[string]string{"SANDPOOL_CONFIG": fromEnv}))
	require.NoError(t, err)
	assert.Equal(t, 2, cfg.MaxSandboxes)
}

func TestConfigJSONFile(t *testing.T) {
	rootfs := fakeRootfs(t)
	file := writeConfig(t, "sandpool.json", `{
  "listen": "[::1]:9000",
  "rootfs_path": "`+rootfs+`",
  "max_sandboxes": 5,
  "idle_timeout": 1.5,
  "log_format": "json"
}`)

	cfg, err := loadConfig([]string{"--config", file}, envFrom(nil))
	require.NoError(t, err)
	assert.Equal(t, "[::1]:9000", cfg.Listen)
	assert.Equal(t, rootfs, cfg.RootfsPath)
	assert.Equal(t, 5, cfg.MaxSandboxes)
	assert.Equal(t, 1500*time.Millisecond, seconds(cfg.IdleTimeout))
	assert.Equal(t, "json", cfg.LogFormat)
	assert.Equal(t, "systrap", cfg.Platform, "unset keys keep their defaults")
}

func TestConfigEmptyFileKeepsDefaults(t *testing.T) {
	rootfs := fakeRootfs(t)
	file := writeConfig(t, "empty.yaml", "")
	cfg, err := loadConfig([]string{"--config", file, "--rootfs", rootfs}, envFrom(nil))
	require.NoError(t, err)
	assert.Equal(t, 100, cfg.MaxSandboxes)
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"unknown key", "listen: 127.0.0.1:1\nmax_sandboxs: 3\n", "max_sandboxs"},
		{"unknown JSON key", `{"idle_timeout": 1, "idle_timout": 2}`, "idle_timout"},
		{"wrong type", "listen: a:1\nmax_sandboxes: lots\n", "line 2"},
		{"not YAML", "listen: [unclosed\n", "config file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, "c.yaml", tc.file)
			_, err := loadConfig([]string{"--config", path, "--rootfs", fakeRootfs(t)}, envFrom(nil))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), path, "the message names the file")
		})
	}
}

func TestConfigMissingFile(t *testing.T) {
	_, err := loadConfig([]string{"--config", filepath.Join(t.TempDir(), "nope.yaml")}, envFrom(nil))
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestConfigInputErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		wantE string
	}{
		{"env max sandboxes not a number", nil, map[string]string{"SANDPOOL_MAX_SANDBOXES": "ten"}, "SANDPOOL_MAX_SANDBOXES"},
		{"env idle timeout not a number", nil, map[string]string{"SANDPOOL_IDLE_TIMEOUT": "5m"}, "SANDPOOL_IDLE_TIMEOUT"},
		{"flag idle timeout not a number", []string{"--idle-timeout", "soon"}, nil, "--idle-timeout"},
		{"unknown flag", []string{"--bogus"}, nil, "bogus"},
		{"stray argument", []string{"extra"}, nil, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.args, envFrom(tc.env))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantE)
		})
	}
}

func TestConfigValidation(t *testing.T) {
	rootfsForSnapshots := fakeRootfs(t)
	noShell := t.TempDir()
	shellIsDir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(shellIsDir, "bin", "sh"), 0o755))

	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		file string
		want string
	}{
		{name: "host root as rootfs", args: []string{"--rootfs", "/"}, want: "must not be the host's /"},
		{name: "rootfs without bin/sh", args: []string{"--rootfs", noShell}, want: "make rootfs"},
		{name: "rootfs bin/sh is a directory", args: []string{"--rootfs", shellIsDir}, want: "has no /bin/sh"},
		{name: "zero max sandboxes", env: map[string]string{"SANDPOOL_MAX_SANDBOXES": "0"}, want: "max_sandboxes must be positive"},
		{name: "negative max sandboxes", args: []string{"--max-sandboxes", "-1"}, want: "max_sandboxes must be positive"},
		{name: "zero max sandboxes flag", args: []string{"--max-sandboxes", "0"}, want: "max_sandboxes must be positive"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, want: "log_level"},
		{name: "negative idle timeout", args: []string{"--idle-timeout", "-1"}, want: "idle_timeout must be >= 0"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, want: "log_format"},
		{name: "bad platform", args: []string{"--platform", "docker"}, want: "platform must be"},
		{name: "listen without port", args: []string{"--listen", "localhost"}, want: "listen"},
		{name: "listen garbage", env: map[string]string{"SANDPOOL_LISTEN": "not an address"}, want: "listen"},
		{name: "tiny max message", file: "max_message_bytes: 1024\n", want: "max_message_bytes"},
		{name: "zero shutdown timeout", file: "shutdown_timeout: 0\n", want: "shutdown_timeout"},
		{name: "zero snapshot timeout", file: "snapshot_timeout: 0\n", want: "snapshot_timeout"},
		{name: "snapshots inside the rootfs", args: []string{"--rootfs", rootfsForSnapshots, "--filesystem-snapshot-path", rootfsForSnapshots + "/srv/snaps"},
			want: "must not be inside the rootfs"},
		{name: "checkpoints inside the rootfs", args: []string{"--rootfs", rootfsForSnapshots, "--checkpoint-path", rootfsForSnapshots + "/cp"},
			want: "checkpoint_path must not be inside the rootfs"},
		{name: "checkpoints and snapshots share a directory", args: []string{"--checkpoint-path", "/x/d", "--filesystem-snapshot-path", "/x/d"},
			want: "must be different directories"},
		{name: "zero checkpoint timeout", file: "checkpoint_timeout: 0\n", want: "checkpoint_timeout"},
		{name: "negative retention", file: "checkpoint_retention_days: -1\n", want: "checkpoint_retention_days"},
		{name: "tiny reconnect buffer", file: "reconnect_buffer_bytes: 100\n", want: "reconnect_buffer_bytes"},
		{name: "pprof on the network", args: []string{"--pprof-listen", "0.0.0.0:6060"}, want: "pprof_listen"},
		{name: "pprof on a name", env: map[string]string{"SANDPOOL_PPROF_LISTEN": "example.invalid:6060"}, want: "pprof_listen"},
		{name: "pprof without port", file: "pprof_listen: 127.0.0.1\n", want: "pprof_listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.args, testEnv(t, fakeRootfs(t), tc.env, tc.file))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestConfigValidationReportsEveryProblem(t *testing.T) {
	_, err := loadConfig([]string{"--rootfs", "/", "--log-format", "xml", "--max-sandboxes", "-1"}, envFrom(nil))
	require.Error(t, err)
	for _, want := range []string{"rootfs_path", "log_format", "max_sandboxes"} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestConfigRelativePathsBecomeAbsolute(t *testing.T) {
	wd := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(wd, "rfs", "bin"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(wd, "rfs", "bin", "sh"), nil, 0o755))
	t.Chdir(wd)

	cfg, err := loadConfig([]string{"--rootfs", "rfs", "--state-dir", "state"}, envFrom(nil))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(wd, "rfs"), cfg.RootfsPath)
	assert.Equal(t, filepath.Join(wd, "state"), cfg.StateDir)
}

func TestConfigDefaultRootfsIsBuildRootfs(t *testing.T) {
	wd := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(wd, "build", "rootfs", "bin"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(wd, "build", "rootfs", "bin", "sh"), nil, 0o755))
	t.Chdir(wd)

	cfg, err := loadConfig(nil, envFrom(nil))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(wd, "build", "rootfs"), cfg.RootfsPath)
}

// TestConfigFeatureDirs: the snapshot and checkpoint directories come from
// the file, upstream's variable, sandpool's variable, then the flag.
func TestConfigFeatureDirs(t *testing.T) {
	rootfs := fakeRootfs(t)
	for _, dir := range []struct {
		key, upstream, env, flag string
		get                      func(Config) string
	}{
		{"filesystem_snapshot_path", "FILESYSTEM_SNAPSHOT_MOUNT_PATH", "SANDPOOL_FILESYSTEM_SNAPSHOT_PATH", "--filesystem-snapshot-path",
			func(c Config) string { return c.FilesystemSnapshotPath }},
		{"checkpoint_path", "SANDBOX_CHECKPOINT_MOUNT_PATH", "SANDPOOL_CHECKPOINT_PATH", "--checkpoint-path",
			func(c Config) string { return c.CheckpointPath }},
	} {
		for _, tc := range []struct {
			name string
			args []string
			env  map[string]string
			file string
			want string
		}{
			{name: "unset disables it", want: ""},
			{name: "config file", file: dir.key + ": /file/d\n", want: "/file/d"},
			{name: "upstream variable", env: map[string]string{dir.upstream: "/upstream/d"}, want: "/upstream/d"},
			{name: "sandpool variable beats upstream's", env: map[string]string{dir.upstream: "/upstream/d", dir.env: "/sandpool/d"}, want: "/sandpool/d"},
			{name: "variable beats file", file: dir.key + ": /file/d\n", env: map[string]string{dir.upstream: "/upstream/d"}, want: "/upstream/d"},
			{name: "flag beats all", args: []string{dir.flag, "/flag/d"}, env: map[string]string{dir.env: "/sandpool/d"}, want: "/flag/d"},
		} {
			t.Run(dir.key+"/"+tc.name, func(t *testing.T) {
				cfg, err := loadConfig(tc.args, testEnv(t, rootfs, tc.env, tc.file))
				require.NoError(t, err)
				assert.Equal(t, tc.want, dir.get(cfg))
			})
		}
	}
}

func TestConfigCheckpointKeys(t *testing.T) {
	cfg, err := loadConfig(nil, testEnv(t, fakeRootfs(t), nil,
		"checkpoint_timeout: 30\ncheckpoint_retention_days: 7\nreconnect_buffer_bytes: 1048576\n"))
	require.NoError(t, err)
	assert.Equal(t, 30.0, cfg.CheckpointTimeout)
	assert.Equal(t, 7.0, cfg.CheckpointRetentionDays)
	assert.Equal(t, 1<<20, cfg.ReconnectBufferBytes)
}

func TestPprofServesProfilesOnItsOwnListener(t *testing.T) {
	srv, addr, err := startPprof("127.0.0.1:0", zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	resp, err := http.Get("http://" + addr + "/debug/pprof/cmdline")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}
