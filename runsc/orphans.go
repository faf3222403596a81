package runsc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A `runsc create` or `runsc restore` killed mid-way (a cancelled create, a
// server shutting down, a crash) can leave the runsc-sandbox and
// runsc-gofer processes it had started running with no container state to
// find them by: `runsc delete` then says "not found". They are recognised
// by their bundle, a directory unique to one sandbox of this runner, on
// their command line.

// orphanGrace bounds the wait for killed processes to be gone.
const orphanGrace = 2 * time.Second

// killBundleProcesses SIGKILLs every process whose runsc --bundle satisfies
// match and waits (up to orphanGrace) until none is left.
func killBundleProcesses(match func(bundle string) bool) error {
	pids := bundleProcesses(match)
	var errs []error
	for _, pid := range pids {
		errs = append(errs, killIfStill(pid, match))
	}
	deadline := time.Now().Add(orphanGrace)
	for len(pids) > 0 && len(bundleProcesses(match)) > 0 {
		if time.Now().After(deadline) {
			errs = append(errs, errors.New("runsc processes still alive after SIGKILL"))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.Join(errs...)
}

// killIfStill signals pid through a pidfd, after checking that the pidfd's
// process still has a matching bundle: a pid reused meanwhile is left alone.
func killIfStill(pid int, match func(string) bool) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // gone already
	}
	defer unix.Close(fd)
	if bundle, ok := bundleOf(pid); !ok || !match(bundle) {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill runsc process %d: %w", pid, err)
	}
	return nil
}

// bundleProcesses lists the live processes whose bundle satisfies match,
// in one pass over /proc (zombies have an empty command line).
func bundleProcesses(match func(string) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if bundle, ok := bundleOf(pid); ok && match(bundle) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// bundleOf is the value of `--bundle=B` or `--bundle B` on pid's command
// line.
func bundleOf(pid int) (string, bool) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return "", false
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	for i, a := range args {
		if b, ok := strings.CutPrefix(a, "--bundle="); ok {
			return b, true
		}
		if a == "--bundle" && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}
