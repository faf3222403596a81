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

// killBundleProcesses SIGKILLs every process started for bundle and waits
// (up to orphanGrace) until none is left. It returns how many it killed.
func killBundleProcesses(bundle string) (int, error) {
	pids := bundleProcesses(bundle)
	var errs []error
	for _, pid := range pids {
		errs = append(errs, killIfStill(pid, bundle))
	}
	deadline := time.Now().Add(orphanGrace)
	for len(bundleProcesses(bundle)) > 0 {
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("processes of bundle %s still alive after SIGKILL", bundle))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return len(pids), errors.Join(errs...)
}

// killIfStill signals pid through a pidfd, after checking that the pidfd's
// process is still one of bundle's: a pid reused meanwhile is left alone.
func killIfStill(pid int, bundle string) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // gone already
	}
	defer unix.Close(fd)
	if !usesBundle(pid, bundle) {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill %d of bundle %s: %w", pid, bundle, err)
	}
	return nil
}

// bundleProcesses lists the live processes whose command line names bundle
// as runsc's --bundle (zombies have an empty command line).
func bundleProcesses(bundle string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && pid != os.Getpid() && usesBundle(pid, bundle) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// usesBundle reports whether pid's arguments hold `--bundle=B` or
// `--bundle B` with B = bundle.
func usesBundle(pid int, bundle string) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	for i, a := range args {
		if a == "--bundle="+bundle || a == "--bundle" && i+1 < len(args) && args[i+1] == bundle {
			return true
		}
	}
	return false
}
