package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/sandpool/sandpool/pool/snapshots"
)

const snapshotsUsage = `usage: sandpool snapshots list [--json] [--config FILE] [--filesystem-snapshot-path DIR]
       sandpool snapshots rm NAME... [--json] [--config FILE] [--filesystem-snapshot-path DIR]`

// snapshotsCommand lists or removes snapshots in the configured directory.
// It is safe while a server uses the directory.
func snapshotsCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(snapshotsUsage)
	}
	if isHelp(args[0]) {
		fmt.Fprintln(stderr, snapshotsUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("snapshots "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", getenv("SANDPOOL_CONFIG"), "config file (YAML or JSON)")
	dirFlag := fs.String("filesystem-snapshot-path", "", "snapshot directory (overrides the config)")
	asJSON := fs.Bool("json", false, "print JSON")
	// Flags may come before or after the names.
	var names []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		names = append(names, fs.Arg(0))
		args = fs.Args()[1:]
	}
	store, err := openSnapshotDir(*configPath, *dirFlag, getenv)
	if err != nil {
		return err
	}
	switch sub {
	case "list", "ls":
		if len(names) > 0 {
			return fmt.Errorf("snapshots list takes no names\n%s", snapshotsUsage)
		}
		return listSnapshots(store, *asJSON, stdout, stderr)
	case "rm", "remove":
		if len(names) == 0 {
			return fmt.Errorf("snapshots rm needs at least one name\n%s", snapshotsUsage)
		}
		return removeSnapshots(store, names, *asJSON, stdout)
	default:
		return fmt.Errorf("unknown snapshots command %q\n%s", sub, snapshotsUsage)
	}
}

// openSnapshotDir finds the directory the way the server does (config
// file, then environment, then flag) and refuses one that does not exist
// rather than creating it.
func openSnapshotDir(configPath, dirFlag string, getenv func(string) string) (*snapshots.Store, error) {
	cfg := defaultConfig()
	if configPath != "" {
		if err := cfg.loadFile(configPath); err != nil {
			return nil, err
		}
	}
	if err := cfg.applyEnv(getenv); err != nil {
		return nil, err
	}
	if dirFlag != "" {
		cfg.FilesystemSnapshotPath = dirFlag
	}
	if cfg.FilesystemSnapshotPath == "" {
		return nil, errors.New("no snapshot directory configured: set filesystem_snapshot_path in the config file, SANDPOOL_FILESYSTEM_SNAPSHOT_PATH, or --filesystem-snapshot-path")
	}
	dir, err := filepath.Abs(cfg.FilesystemSnapshotPath)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("snapshot directory %s does not exist", dir)
	}
	return snapshots.New(snapshots.Config{Dir: dir})
}

func listSnapshots(store *snapshots.Store, asJSON bool, stdout, stderr io.Writer) error {
	infos, listErr := store.List()
	if listErr != nil {
		// Broken entries are reported; the readable ones are still listed.
		fmt.Fprintln(stderr, "warning:", listErr)
	}
	if asJSON {
		if infos == nil {
			infos = []snapshots.Info{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(infos)
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSIZE\tCREATED\tSOURCE SANDBOX\tSHA256\tRUNSC")
	for _, i := range infos {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%.12s\t%s\n", i.Name, humanize.IBytes(uint64(i.Size)),
			i.Created.UTC().Format(time.DateTime), i.SourceSandbox, i.SHA256, i.RunscVersion)
	}
	return w.Flush()
}

func removeSnapshots(store *snapshots.Store, names []string, asJSON bool, stdout io.Writer) error {
	removed := []string{}
	var errs []error
	for _, name := range names {
		if err := store.Remove(name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
		if !asJSON {
			fmt.Fprintln(stdout, "removed", name)
		}
	}
	if asJSON {
		if err := json.NewEncoder(stdout).Encode(map[string][]string{"removed": removed}); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}
