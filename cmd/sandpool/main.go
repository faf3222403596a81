// Command sandpool serves pre-warmed gVisor sandboxes over WebSocket.
//
// Usage: sandpool [serve] [flags]. See README.md for the configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/mattn/go-isatty"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/sandpool/sandpool/pool"
	"github.com/sandpool/sandpool/pool/checkpoints"
	"github.com/sandpool/sandpool/pool/snapshots"
	"github.com/sandpool/sandpool/runsc"
	"github.com/sandpool/sandpool/transport"
)

func main() {
	if err := run(os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sandpool:", err)
		os.Exit(1)
	}
}

const usage = `usage: sandpool [serve] [flags]        serve sandboxes (the default command)
       sandpool snapshots list|rm ...   list or remove filesystem snapshots (sandpool snapshots --help)
       sandpool load [flags]            load-test a server, or raw runsc (sandpool load --help)
See README.md for the configuration.`

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// run dispatches the subcommand.
func run(args []string, getenv func(string) string, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	if cmd == "serve" && len(args) > 0 && isHelp(args[0]) || cmd == "help" {
		fmt.Fprintln(stderr, usage)
		if cmd == "serve" {
			_, _ = loadConfig([]string{"-h"}, getenv) // prints serve's flags
		}
		return nil
	}
	switch cmd {
	case "serve":
		cfg, err := loadConfig(args, getenv)
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		// A vanished log reader must not kill the server before it has
		// deleted its sandboxes: writes then fail with EPIPE instead.
		signal.Ignore(syscall.SIGPIPE)
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		reloadConfig := func() (Config, error) { return loadConfig(args, getenv) }
		return serve(ctx, cfg, newLogger(cfg, stderr), hup, reloadConfig)
	case "snapshots":
		return snapshotsCommand(args, getenv, os.Stdout, stderr)
	case "load":
		return loadCommand(args, os.Stdout, stderr)
	default:
		return fmt.Errorf("unknown command %q (commands: serve, snapshots, load)", cmd)
	}
}

// newLogger logs JSON, or human-readable lines when stderr is a terminal.
func newLogger(cfg Config, w io.Writer) zerolog.Logger {
	// protoactor logs a "message" attribute; our own text goes in "msg".
	zerolog.MessageFieldName = "msg"
	// Durations are configured in seconds; log them that way.
	zerolog.DurationFieldUnit = time.Second
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil || cfg.LogLevel == "" {
		level = zerolog.InfoLevel
	}
	console := cfg.LogFormat == "console"
	if cfg.LogFormat == "auto" {
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			console = true
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// serve runs the server until ctx ends, then deletes every sandbox. Each
// signal on reloads re-reads the config with reloadConfig.
func serve(ctx context.Context, cfg Config, log zerolog.Logger, reloads <-chan os.Signal, reloadConfig func() (Config, error)) error {
	binary, err := runsc.FindBinary(cfg.RunscPath)
	if err != nil {
		return err
	}
	if err := runsc.CheckFeatures(ctx, binary); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	unlock, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer unlock()

	runner, err := runsc.New(runsc.Config{
		Binary:   binary,
		StateDir: cfg.StateDir,
		Rootfs:   cfg.RootfsPath,
		Platform: cfg.Platform,
	})
	if err != nil {
		return err
	}
	// Whatever a crashed predecessor left under our root goes first.
	if leftovers, err := runner.Reconcile(ctx); err != nil {
		return err
	} else if len(leftovers) > 0 {
		log.Warn().Strs("containers", leftovers).Msg("deleted sandboxes left by a previous run")
	}

	var store *snapshots.Store
	if cfg.FilesystemSnapshotPath != "" {
		if store, err = openSnapshots(cfg, binary, log); err != nil {
			return err
		}
	}
	var checkpointStore *checkpoints.Store
	if cfg.CheckpointPath != "" {
		if checkpointStore, err = openCheckpoints(cfg, binary, log); err != nil {
			return err
		}
	}

	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(zerolog.NewSlogHandler(log.With().Str("component", "protoactor").Logger()))
	}))
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sandboxes, err := pool.New(pool.Config{
		System:          system,
		Runtime:         runner,
		Limits:          cfg.limits(),
		Logger:          log,
		Snapshots:       store,
		SnapshotTimeout: seconds(cfg.SnapshotTimeout),
		Registerer:      registry,

		Checkpoints:         checkpointStore,
		CheckpointTimeout:   seconds(cfg.CheckpointTimeout),
		CheckpointRetention: seconds(cfg.CheckpointRetentionDays * 24 * 3600),
		ReplayBuffer:        cfg.ReconnectBufferBytes,
	})
	if err != nil {
		return err
	}
	srv, err := transport.New(transport.Config{
		Pool:               sandboxes,
		Logger:             log,
		DefaultIdleTimeout: seconds(cfg.IdleTimeout),
		MaxMessageBytes:    cfg.MaxMessageBytes,
		Metrics:            promhttp.HandlerFor(registry, promhttp.HandlerOpts{Registry: registry}),
	})
	if err != nil {
		return err
	}
	if cfg.PprofListen != "" {
		profiles, _, err := startPprof(cfg.PprofListen, log)
		if err != nil {
			return err
		}
		defer profiles.Close()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	httpServer := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- httpServer.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Str("runsc", binary).Str("rootfs", cfg.RootfsPath).
		Str("state_dir", cfg.StateDir).Str("filesystem_snapshot_path", cfg.FilesystemSnapshotPath).
		Str("checkpoint_path", cfg.CheckpointPath).
		Int("pools", len(cfg.Pools)).Msg("listening")
	reloadCtx, stopReloads := context.WithCancel(ctx)
	defer stopReloads()
	go reloadOnSignal(reloadCtx, reloads, cfg, reloadConfig, sandboxes, log)

	select {
	case <-ctx.Done():
		log.Info().Msg("shutting down")
	case err := <-served:
		log.Error().Err(err).Msg("http server failed")
	}
	return shutdown(cfg, log, httpServer, sandboxes, runner, system)
}

// openSnapshots opens the snapshot directory and removes what snapshots
// interrupted by a crash left there.
func openSnapshots(cfg Config, binary string, log zerolog.Logger) (*snapshots.Store, error) {
	store, err := snapshots.New(snapshots.Config{Dir: cfg.FilesystemSnapshotPath, RunscVersion: runsc.PinnedVersion(binary)})
	return cleanOpened(store, err, "snapshots", log)
}

// openCheckpoints opens the checkpoint directory and removes what
// checkpoints interrupted by a crash left there.
func openCheckpoints(cfg Config, binary string, log zerolog.Logger) (*checkpoints.Store, error) {
	store, err := checkpoints.New(checkpoints.Config{Dir: cfg.CheckpointPath, RunscVersion: runsc.PinnedVersion(binary)})
	return cleanOpened(store, err, "checkpoints", log)
}

// cleanOpened takes a store's New results and, if it opened, cleans what
// interrupted operations (what, for the log) left in it.
func cleanOpened[S interface{ Clean() ([]string, error) }](store S, err error, what string, log zerolog.Logger) (S, error) {
	var none S
	if err != nil {
		return none, err
	}
	removed, err := store.Clean()
	if len(removed) > 0 {
		log.Warn().Strs("files", removed).Msg("removed files of interrupted " + what)
	}
	if err != nil {
		return none, err
	}
	return store, nil
}

// shutdown stops accepting clients, deletes every sandbox (each client is
// told), and removes what runsc left, within the configured time.
func shutdown(cfg Config, log zerolog.Logger, httpServer *http.Server, sandboxes *pool.Pool, runner *runsc.Runner, system *actor.ActorSystem) error {
	ctx, cancel := context.WithTimeout(context.Background(), seconds(cfg.ShutdownTimeout))
	defer cancel()
	// Hijacked WebSocket connections are not closed by Shutdown: the
	// sandboxes close them as they go.
	_ = httpServer.Shutdown(ctx)
	errs := []error{sandboxes.Shutdown(ctx)}
	_ = httpServer.Close()
	if leftovers, err := runner.Reconcile(ctx); err != nil {
		errs = append(errs, err)
	} else if len(leftovers) > 0 {
		log.Warn().Strs("containers", leftovers).Msg("deleted sandboxes that outlived their actors")
	}
	system.Shutdown()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info().Msg("stopped")
	return nil
}

// lockStateDir makes sure one server owns a state dir: two would delete
// each other's sandboxes at startup.
func lockStateDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("state dir %s is in use by another sandpool server", dir)
	}
	return func() { f.Close() }, nil
}
