package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/pool"
)

// fakePool records Reconfigure calls.
type fakePool struct {
	mu    sync.Mutex
	calls []pool.Limits
	err   error
}

func (f *fakePool) Reconfigure(_ context.Context, l pool.Limits) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.calls = append(f.calls, l)
	return nil
}

func (f *fakePool) applied() []pool.Limits {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pool.Limits(nil), f.calls...)
}

// safeBuffer is a log sink read while the reload goroutine writes.
type safeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestConfigPools(t *testing.T) {
	rootfs := fakeRootfs(t)
	cfg, err := loadConfig([]string{"--filesystem-snapshot-path", t.TempDir()}, testEnv(t, rootfs, nil, `
max_sandboxes: 50
create_concurrency: 3
auto_warm: 1
pools:
  - warm: 2
    max_age: 3600
  - snapshot: py-deps
    warm: 4
    max: 10
`))
	require.NoError(t, err)
	assert.Equal(t, pool.Limits{MaxSandboxes: 50, CreateConcurrency: 3, AutoWarm: 1, Pools: []pool.PoolConfig{
		{Warm: 2, MaxAge: time.Hour},
		{Snapshot: "py-deps", Warm: 4, Max: 10},
	}}, cfg.limits())

	env := testEnv(t, rootfs, map[string]string{"SANDPOOL_CREATE_CONCURRENCY": "4"}, "")
	cfg, err = loadConfig(nil, env)
	require.NoError(t, err)
	assert.Equal(t, 4, cfg.CreateConcurrency)
	cfg, err = loadConfig([]string{"--create-concurrency", "1"}, env)
	require.NoError(t, err)
	assert.Equal(t, 1, cfg.CreateConcurrency, "the flag beats the variable")
	assert.Empty(t, defaultConfig().Pools, "no pools unless configured")
	assert.Equal(t, 2, defaultConfig().CreateConcurrency)
}

func TestConfigPoolErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
		snapshots        bool
	}{
		{name: "unknown pool key", file: "pools:\n  - warm: 1\n    wram: 2\n", want: "wram"},
		{name: "negative warm", file: "pools:\n  - warm: -1\n", want: "warm must be >= 0"},
		{name: "max below warm", file: "pools:\n  - warm: 3\n    max: 2\n", want: "max must be 0 (no limit) or at least warm"},
		{name: "two base pools", file: "pools:\n  - warm: 1\n  - snapshot: ''\n    warm: 1\n", want: "a second pool for the same snapshot"},
		{name: "bad snapshot name", file: "pools:\n  - snapshot: ../x\n    warm: 1\n", snapshots: true, want: "invalid"},
		{name: "snapshot pool without snapshots", file: "pools:\n  - snapshot: x\n    warm: 1\n", want: "set filesystem_snapshot_path"},
		{name: "auto_warm without snapshots", file: "auto_warm: 2\n", want: "auto_warm needs filesystem snapshots"},
		{name: "more warm than the cap", file: "max_sandboxes: 3\npools:\n  - warm: 4\n", want: "more than max_sandboxes"},
		{name: "zero concurrency", file: "create_concurrency: 0\n", want: "create_concurrency must be positive"},
		{name: "negative max age", file: "pools:\n  - warm: 1\n    max_age: -5\n", want: "max_age must be >= 0"},
		{name: "warm not a number", file: "pools:\n  - warm: many\n", want: "line 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			if tc.snapshots {
				args = []string{"--filesystem-snapshot-path", t.TempDir()}
			}
			_, err := loadConfig(args, testEnv(t, fakeRootfs(t), nil, tc.file))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestReloadAppliesPoolsAndKeepsTheOldConfigOnError(t *testing.T) {
	rootfs := fakeRootfs(t)
	path := writeConfig(t, "sandpool.yaml", "pools:\n  - warm: 2\n")
	load := func() (Config, error) {
		return loadConfig([]string{"--config", path}, envFrom(map[string]string{"SANDPOOL_ROOTFS": rootfs}))
	}
	running, err := load()
	require.NoError(t, err)
	fp := &fakePool{}
	logs := &safeBuffer{}
	log := zerolog.New(logs)
	signals := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reloadOnSignal(ctx, signals, running, load, fp, log)

	// Resize up.
	require.NoError(t, os.WriteFile(path, []byte("create_concurrency: 1\npools:\n  - warm: 5\n"), 0o600))
	signals <- syscall.SIGHUP
	require.Eventually(t, func() bool { return len(fp.applied()) == 1 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, pool.Limits{MaxSandboxes: 100, CreateConcurrency: 1, Pools: []pool.PoolConfig{{Warm: 5}}}, fp.applied()[0])

	// An invalid file: nothing applied, a clear message.
	require.NoError(t, os.WriteFile(path, []byte("pools:\n  - warm: 5\n    max: 1\n"), 0o600))
	signals <- syscall.SIGHUP
	require.Eventually(t, func() bool { return bytes.Contains([]byte(logs.String()), []byte("reload rejected")) }, 5*time.Second, time.Millisecond)
	assert.Contains(t, logs.String(), "max must be 0 (no limit) or at least warm")
	assert.Len(t, fp.applied(), 1)

	// Resize down; a key that needs a restart is named and ignored.
	require.NoError(t, os.WriteFile(path, []byte("listen: 127.0.0.1:9999\npools:\n  - warm: 1\n"), 0o600))
	signals <- syscall.SIGHUP
	require.Eventually(t, func() bool { return len(fp.applied()) == 2 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, []pool.PoolConfig{{Warm: 1}}, fp.applied()[1].Pools)
	require.Eventually(t, func() bool { return bytes.Contains([]byte(logs.String()), []byte("only change on restart")) }, 5*time.Second, time.Millisecond)
	assert.Contains(t, logs.String(), `"keys":["listen"]`)
}

func TestReloadRefusedByThePool(t *testing.T) {
	rootfs := fakeRootfs(t)
	load := func() (Config, error) { return loadConfig(nil, envFrom(map[string]string{"SANDPOOL_ROOTFS": rootfs})) }
	running, err := load()
	require.NoError(t, err)
	running.Pools = []PoolConfig{{Warm: 1}}
	logs := &safeBuffer{}
	got := reload(context.Background(), running, load, &fakePool{err: errors.New("server is shutting down")}, zerolog.New(logs))
	assert.Equal(t, running, got, "the running config stays")
	assert.Contains(t, logs.String(), "server is shutting down")
}

func TestShippedConfigKeepsTwoBaseSandboxesWarm(t *testing.T) {
	// `make run` serves with this file.
	cfg, err := loadConfig([]string{"--config", "sandpool.yaml"}, envFrom(map[string]string{"SANDPOOL_ROOTFS": fakeRootfs(t)}))
	require.NoError(t, err)
	assert.Equal(t, pool.Limits{MaxSandboxes: 100, CreateConcurrency: 2, Pools: []pool.PoolConfig{{Warm: 2, MaxAge: time.Hour}}}, cfg.limits())
}
