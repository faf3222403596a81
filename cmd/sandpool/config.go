package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/sandpool/sandpool/pool"
)

// Config is every setting of the server. Values come from defaults, then
// the config file, then SANDPOOL_* environment variables, then flags.
type Config struct {
	// Listen is the HTTP/WebSocket address.
	Listen string `yaml:"listen"`
	// StateDir holds runsc's root and the sandboxes' bundles; one server
	// per state dir.
	StateDir string `yaml:"state_dir"`
	// RunscPath is the runsc binary; empty means bin/runsc, then PATH.
	RunscPath string `yaml:"runsc_path"`
	// RootfsPath is the shared root filesystem; empty means build/rootfs.
	RootfsPath string `yaml:"rootfs_path"`
	// Platform is runsc's --platform.
	Platform string `yaml:"platform"`
	// MaxSandboxes caps live sandboxes (warm and creating ones included).
	MaxSandboxes int `yaml:"max_sandboxes"`
	// CreateConcurrency caps sandbox creations in flight (refills and
	// clients' creates together).
	CreateConcurrency int `yaml:"create_concurrency"`
	// AutoWarm gives every snapshot created on the server a pool of this
	// many warm sandboxes; 0 = off.
	AutoWarm int `yaml:"auto_warm"`
	// Pools are the warm pools. SIGHUP re-reads them (and the two keys
	// above) without a restart.
	Pools []PoolConfig `yaml:"pools"`
	// IdleTimeout (seconds) applies when a client sends no idle_timeout.
	IdleTimeout float64 `yaml:"idle_timeout"`
	// MaxMessageBytes is the largest client frame the server reads.
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	// ShutdownTimeout (seconds) bounds deleting every sandbox on exit.
	ShutdownTimeout float64 `yaml:"shutdown_timeout"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is auto (console on a terminal, else JSON), json or console.
	LogFormat string `yaml:"log_format"`
	// PprofListen serves net/http/pprof on this loopback address, apart
	// from the clients' listener; empty (the default) serves nothing.
	PprofListen string `yaml:"pprof_listen"`
	// FilesystemSnapshotPath is the snapshot directory; empty disables
	// filesystem snapshots.
	FilesystemSnapshotPath string `yaml:"filesystem_snapshot_path"`
	// SnapshotTimeout (seconds) bounds one filesystem snapshot.
	SnapshotTimeout float64 `yaml:"snapshot_timeout"`
	// CheckpointPath is the checkpoint directory; empty disables
	// checkpoints (enable_checkpoint is refused).
	CheckpointPath string `yaml:"checkpoint_path"`
	// CheckpointTimeout (seconds) bounds one checkpoint.
	CheckpointTimeout float64 `yaml:"checkpoint_timeout"`
	// CheckpointRetentionDays removes the checkpoints of sandboxes not
	// attached for this many days; 0 keeps them.
	CheckpointRetentionDays float64 `yaml:"checkpoint_retention_days"`
	// ReconnectBufferBytes bounds the output of one execution kept while
	// its client is away.
	ReconnectBufferBytes int `yaml:"reconnect_buffer_bytes"`
}

// PoolConfig is one warm pool in the config file.
type PoolConfig struct {
	// Snapshot is the filesystem snapshot; empty or absent = base rootfs.
	Snapshot string `yaml:"snapshot"`
	// Warm is how many ready sandboxes to keep.
	Warm int `yaml:"warm"`
	// Max caps the pool's live sandboxes (ready and in use); 0 = none.
	Max int `yaml:"max"`
	// MaxAge (seconds) recycles older ready sandboxes; 0 = never.
	MaxAge float64 `yaml:"max_age"`
}

// limits are the pool settings of the config.
func (c Config) limits() pool.Limits {
	l := pool.Limits{MaxSandboxes: c.MaxSandboxes, CreateConcurrency: c.CreateConcurrency, AutoWarm: c.AutoWarm}
	for _, p := range c.Pools {
		l.Pools = append(l.Pools, pool.PoolConfig{Snapshot: p.Snapshot, Warm: p.Warm, Max: p.Max, MaxAge: seconds(p.MaxAge)})
	}
	return l
}

func defaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:8080",
		StateDir:          "/var/lib/sandpool",
		Platform:          "systrap",
		MaxSandboxes:      100,
		CreateConcurrency: 2,
		IdleTimeout:       300,
		MaxMessageBytes:   8 << 20,
		ShutdownTimeout:   30,
		LogLevel:          "info",
		LogFormat:         "auto",
		SnapshotTimeout:   600,
		CheckpointTimeout: 300,
		// actors.DefaultReplayBuffer; spelled out so the config reads it.
		ReconnectBufferBytes: 8 << 20,
	}
}

// loadConfig builds the config from args (flags after the subcommand) and
// the environment, then validates it.
func loadConfig(args []string, getenv func(string) string) (Config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	configPath := fs.String("config", getenv("SANDPOOL_CONFIG"), "config file (YAML or JSON)")
	var flagValues Config
	fs.StringVar(&flagValues.Listen, "listen", "", "listen address (default 127.0.0.1:8080)")
	fs.StringVar(&flagValues.StateDir, "state-dir", "", "state directory (default /var/lib/sandpool)")
	fs.StringVar(&flagValues.RunscPath, "runsc", "", "runsc binary (default bin/runsc, then PATH)")
	fs.StringVar(&flagValues.RootfsPath, "rootfs", "", "root filesystem directory (default build/rootfs)")
	fs.StringVar(&flagValues.Platform, "platform", "", "runsc platform (default systrap)")
	fs.IntVar(&flagValues.MaxSandboxes, "max-sandboxes", 0, "maximum live sandboxes, warm ones included (default 100)")
	fs.IntVar(&flagValues.CreateConcurrency, "create-concurrency", 0, "maximum sandbox creations in flight (default 2)")
	idle := fs.String("idle-timeout", "", "default idle timeout in seconds, 0 = never (default 300)")
	fs.StringVar(&flagValues.LogLevel, "log-level", "", "debug, info, warn or error")
	fs.StringVar(&flagValues.LogFormat, "log-format", "", "auto, json or console")
	fs.StringVar(&flagValues.PprofListen, "pprof-listen", "", "serve Go profiles (net/http/pprof) on this loopback address, e.g. 127.0.0.1:6060")
	fs.StringVar(&flagValues.FilesystemSnapshotPath, "filesystem-snapshot-path", "", "filesystem snapshot directory (default: snapshots disabled)")
	fs.StringVar(&flagValues.CheckpointPath, "checkpoint-path", "", "checkpoint directory (default: checkpoints disabled)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if *configPath != "" {
		if err := cfg.loadFile(*configPath); err != nil {
			return Config{}, err
		}
	}
	if err := cfg.applyEnv(getenv); err != nil {
		return Config{}, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg.override(flagValues, set)
	if *idle != "" {
		v, err := strconv.ParseFloat(*idle, 64)
		if err != nil {
			return Config{}, fmt.Errorf("--idle-timeout: %q is not a number of seconds", *idle)
		}
		cfg.IdleTimeout = v
	}
	if err := cfg.resolve(); err != nil {
		return Config{}, err
	}
	return cfg, cfg.validate()
}

// loadFile reads YAML (JSON is YAML too); unknown keys are errors, so a
// typo is not silently ignored.
func (c *Config) loadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // empty file: defaults
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

func (c *Config) applyEnv(getenv func(string) string) error {
	// Upstream cloud-run-sandbox's names; SANDPOOL_* wins over them.
	for key, dst := range map[string]*string{
		"FILESYSTEM_SNAPSHOT_MOUNT_PATH": &c.FilesystemSnapshotPath,
		"SANDBOX_CHECKPOINT_MOUNT_PATH":  &c.CheckpointPath,
	} {
		if v := getenv(key); v != "" {
			*dst = v
		}
	}
	strs := map[string]*string{
		"SANDPOOL_FILESYSTEM_SNAPSHOT_PATH": &c.FilesystemSnapshotPath,
		"SANDPOOL_CHECKPOINT_PATH":          &c.CheckpointPath,
		"SANDPOOL_LISTEN":                   &c.Listen,
		"SANDPOOL_STATE_DIR":                &c.StateDir,
		"SANDPOOL_RUNSC":                    &c.RunscPath,
		"SANDPOOL_ROOTFS":                   &c.RootfsPath,
		"SANDPOOL_PLATFORM":                 &c.Platform,
		"SANDPOOL_LOG_LEVEL":                &c.LogLevel,
		"SANDPOOL_LOG_FORMAT":               &c.LogFormat,
		"SANDPOOL_PPROF_LISTEN":             &c.PprofListen,
	}
	for key, dst := range strs {
		if v := getenv(key); v != "" {
			*dst = v
		}
	}
	for key, dst := range map[string]*int{
		"SANDPOOL_MAX_SANDBOXES":      &c.MaxSandboxes,
		"SANDPOOL_CREATE_CONCURRENCY": &c.CreateConcurrency,
	} {
		if v := getenv(key); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%s: %q is not an integer", key, v)
			}
			*dst = n
		}
	}
	if v := getenv("SANDPOOL_IDLE_TIMEOUT"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("SANDPOOL_IDLE_TIMEOUT: %q is not a number of seconds", v)
		}
		c.IdleTimeout = f
	}
	return nil
}

// override copies every flag that was given on the command line (a flag
// set to its zero value still overrides, so validation sees it).
func (c *Config) override(f Config, set map[string]bool) {
	for name, p := range map[string]struct{ dst, src *string }{
		"listen": {&c.Listen, &f.Listen}, "state-dir": {&c.StateDir, &f.StateDir},
		"runsc": {&c.RunscPath, &f.RunscPath}, "rootfs": {&c.RootfsPath, &f.RootfsPath},
		"platform": {&c.Platform, &f.Platform}, "log-level": {&c.LogLevel, &f.LogLevel},
		"log-format":               {&c.LogFormat, &f.LogFormat},
		"pprof-listen":             {&c.PprofListen, &f.PprofListen},
		"filesystem-snapshot-path": {&c.FilesystemSnapshotPath, &f.FilesystemSnapshotPath},
		"checkpoint-path":          {&c.CheckpointPath, &f.CheckpointPath},
	} {
		if set[name] {
			*p.dst = *p.src
		}
	}
	if set["max-sandboxes"] {
		c.MaxSandboxes = f.MaxSandboxes
	}
	if set["create-concurrency"] {
		c.CreateConcurrency = f.CreateConcurrency
	}
}

// resolve makes paths absolute and finds the default rootfs.
func (c *Config) resolve() error {
	if c.RootfsPath == "" {
		c.RootfsPath = defaultRootfs()
	}
	for _, p := range []*string{&c.StateDir, &c.RootfsPath, &c.FilesystemSnapshotPath, &c.CheckpointPath} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	return nil
}

// defaultRootfs is build/rootfs in the working directory, else next to the
// binary's bin/ directory (where `make` puts both).
func defaultRootfs() string {
	if _, err := os.Stat("build/rootfs"); err == nil {
		return "build/rootfs"
	}
	if exe, err := os.Executable(); err == nil {
		return filepath.Join(filepath.Dir(exe), "..", "build", "rootfs")
	}
	return "build/rootfs"
}

func (c *Config) validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if c.RootfsPath == "/" {
		errs = append(errs, errors.New("rootfs_path must not be the host's /: it would expose every host file"))
	} else if st, err := os.Stat(filepath.Join(c.RootfsPath, "bin", "sh")); err != nil || st.IsDir() {
		errs = append(errs, fmt.Errorf("rootfs %s has no /bin/sh: run `make rootfs` or set rootfs_path / --rootfs", c.RootfsPath))
	}
	if err := c.limits().Validate(c.FilesystemSnapshotPath != ""); err != nil {
		errs = append(errs, err)
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("idle_timeout must be >= 0 seconds, got %v", c.IdleTimeout))
	}
	if c.MaxMessageBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("max_message_bytes must be at least 1 MiB (code may be that large), got %d", c.MaxMessageBytes))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown_timeout must be positive, got %v", c.ShutdownTimeout))
	}
	if c.SnapshotTimeout <= 0 {
		errs = append(errs, fmt.Errorf("snapshot_timeout must be positive, got %v", c.SnapshotTimeout))
	}
	if c.FilesystemSnapshotPath != "" && strings.HasPrefix(c.FilesystemSnapshotPath+"/", c.RootfsPath+"/") {
		errs = append(errs, errors.New("filesystem_snapshot_path must not be inside the rootfs: every sandbox would see every snapshot"))
	}
	if c.CheckpointPath != "" && strings.HasPrefix(c.CheckpointPath+"/", c.RootfsPath+"/") {
		errs = append(errs, errors.New("checkpoint_path must not be inside the rootfs: every sandbox would see every checkpoint"))
	}
	if c.CheckpointPath != "" && c.CheckpointPath == c.FilesystemSnapshotPath {
		errs = append(errs, errors.New("checkpoint_path and filesystem_snapshot_path must be different directories"))
	}
	if c.CheckpointTimeout <= 0 {
		errs = append(errs, fmt.Errorf("checkpoint_timeout must be positive, got %v", c.CheckpointTimeout))
	}
	if c.CheckpointRetentionDays < 0 {
		errs = append(errs, fmt.Errorf("checkpoint_retention_days must be >= 0 (0 keeps checkpoints), got %v", c.CheckpointRetentionDays))
	}
	if c.ReconnectBufferBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("reconnect_buffer_bytes must be at least 64 KiB, got %d", c.ReconnectBufferBytes))
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil || c.LogLevel == "" {
		errs = append(errs, fmt.Errorf("log_level must be debug, info, warn or error, got %q", c.LogLevel))
	}
	if c.PprofListen != "" {
		if err := checkLoopbackAddr(c.PprofListen); err != nil {
			errs = append(errs, fmt.Errorf("pprof_listen: %w", err))
		}
	}
	switch c.LogFormat {
	case "auto", "json", "console":
	default:
		errs = append(errs, fmt.Errorf("log_format must be auto, json or console, got %q", c.LogFormat))
	}
	switch c.Platform {
	case "systrap", "ptrace", "kvm":
	default:
		errs = append(errs, fmt.Errorf("platform must be systrap, ptrace or kvm, got %q", c.Platform))
	}
	return errors.Join(errs...)
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
