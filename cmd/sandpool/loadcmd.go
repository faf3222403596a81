package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/mattn/go-isatty"

	"github.com/sandpool/sandpool/cmd/sandpool/load"
)

// loadCommand is `sandpool load`: virtual clients against a server, or the
// same work with the runsc CLI (--raw-runsc), with a report at the end.
func loadCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg load.Config
	var raw load.RawConfig
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8080", "server base URL")
	fs.IntVar(&cfg.Sandboxes, "sandboxes", 100, "cycles to run in all (0: until --duration)")
	fs.IntVar(&cfg.Concurrency, "concurrency", load.DefaultConcurrency, "virtual clients")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop starting cycles after this long (0: until --sandboxes)")
	fs.StringVar(&cfg.Snapshot, "snapshot", "", "create each sandbox from this filesystem snapshot")
	fs.StringVar(&cfg.Language, "language", load.DefaultLanguage, "python or bash")
	fs.StringVar(&cfg.Code, "code", load.DefaultCode, "code each cycle executes")
	fs.DurationVar(&cfg.Think, "think", 0, "pause between one client's cycles")
	fs.DurationVar(&cfg.StepTimeout, "step-timeout", load.DefaultStepTimeout, "bound of each step (create, execute, kill)")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a non-loopback --url")
	jsonOut := fs.Bool("json", false, "print the result as JSON")
	rawMode := fs.Bool("raw-runsc", false, "do the same work with the runsc CLI instead of a server (baseline)")
	fs.StringVar(&raw.Binary, "runsc", "", "runsc binary for --raw-runsc (default bin/runsc, then PATH)")
	fs.StringVar(&raw.Rootfs, "rootfs", "build/rootfs", "root filesystem for --raw-runsc")
	fs.StringVar(&raw.StateDir, "raw-state-dir", "", "state dir for --raw-runsc (default: a temporary one)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sandpool load [flags]\n\nEach virtual client loops: create -> execute -> read all output -> kill.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("load: unexpected argument %q", fs.Arg(0))
	}
	if *rawMode {
		cfg.Raw = &raw
	}
	if f, ok := stderr.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		total := "∞"
		if cfg.Sandboxes > 0 {
			total = fmt.Sprint(cfg.Sandboxes)
		}
		cfg.Progress = func(p load.Progress) {
			fmt.Fprintf(stderr, "\r%d/%s done, %d failed, %d in flight, %.1fs  ", p.Completed, total, p.Failed, p.InFlight, p.Elapsed.Seconds())
		}
	}
	runner, err := load.New(cfg)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	// Ctrl-C stops new cycles; those in flight finish and kill their sandboxes.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, runErr := runner.Run(ctx)
	if cfg.Progress != nil {
		fmt.Fprintln(stderr)
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		writeReport(stdout, res)
	}
	if runErr != nil {
		return fmt.Errorf("load: %w", runErr)
	}
	// The report is out; the exit status tells scripts the run failed.
	if res.Failed > 0 {
		return fmt.Errorf("load: %d of %d cycles failed", res.Failed, res.Failed+res.Completed)
	}
	if res.Interrupted {
		return fmt.Errorf("load: interrupted after %d cycles", res.Completed)
	}
	return nil
}

// writeReport prints a result for people.
func writeReport(w io.Writer, r load.Result) {
	fmt.Fprintf(w, "%s load against %s: %d cycles ok, %d failed in %.1fs at concurrency %d: %.2f cycles/s\n",
		r.Mode, r.Target, r.Completed, r.Failed, r.Elapsed, r.Concurrency, r.Throughput)
	if r.Interrupted {
		fmt.Fprintln(w, "interrupted: stopped by a signal before the run's end")
	}
	fmt.Fprintf(w, "%-14s %6s %10s %10s %10s %10s\n", "latency (ms)", "n", "p50", "p90", "p99", "max")
	for _, name := range load.LatencyNames {
		s := r.Latency[name]
		if s.N == 0 {
			// No sample (no cycle ok, or code that printed nothing): not a 0 ms latency.
			fmt.Fprintf(w, "%-14s %6d %10s %10s %10s %10s\n", name, 0, "-", "-", "-", "-")
			continue
		}
		fmt.Fprintf(w, "%-14s %6d %10.1f %10.1f %10.1f %10.1f\n", name, s.N, s.P50, s.P90, s.P99, s.Max)
	}
	if len(r.Errors) == 0 {
		fmt.Fprintln(w, "errors: none")
		return
	}
	causes := slices.Sorted(maps.Keys(r.Errors))
	width := 0
	for _, c := range causes {
		width = max(width, len(c))
	}
	fmt.Fprintln(w, "errors:")
	for _, c := range causes {
		fmt.Fprintf(w, "  %-*s %6d  (e.g. %s)\n", width, c, r.Errors[c], strings.TrimSpace(r.ErrorExamples[c]))
	}
}
