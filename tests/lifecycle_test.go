package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// idleReapTimeout bounds the wait for a 2 s idle timeout to fire and the
// deletion to finish.
const idleReapTimeout = 12 * time.Second

func TestIdleTimeoutReapsIdleSandbox(t *testing.T) {
	// The TS client always sends idle_timeout; other clients may omit it
	// and get the server's --idle-timeout. Both paths must reap.
	initWithoutIdle := sandboxInit(0)
	delete(initWithoutIdle, "idle_timeout")

	tests := []struct {
		name  string
		flags []string
		init  map[string]any
	}{
		{name: "idle_timeout in init", init: sandboxInit(2)},
		{name: "server --idle-timeout", flags: []string{"--idle-timeout", "2"}, init: initWithoutIdle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.flags...)
			c, _ := createSandbox(t, s, tc.init)
			idleSince := time.Now()

			c.expectStatuses(t, idleReapTimeout, statusDeleting, statusDeleted)
			assert.GreaterOrEqual(t, time.Since(idleSince), 1500*time.Millisecond, "reaped before the idle timeout")

			ids, err := s.runscList()
			require.NoError(t, err)
			assert.Empty(t, ids, "the reaped sandbox's container is gone")

			// The socket stays open; the sandbox does not come back.
			c.sendJSON(t, execRequest("python", "print('too late')"))
			c.expectError(t, statusExecError)
		})
	}
}

func TestIdleTimeoutSparesRunningExecution(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(2))

	// run fails on any status other than output and DONE, so a reap during
	// the sleep (DELETING) fails the test.
	res := c.run(t, "bash", "sleep 5; echo slept")
	assert.Equal(t, "slept\n", res.Stdout)
	assert.Equal(t, 0, res.ExitCode)

	// Once idle again, the timer runs from the end of the execution.
	c.expectStatuses(t, idleReapTimeout, statusDeleting, statusDeleted)
	assertNoContainers(t, s, 5*time.Second)
}

func TestClientDisconnectMidExecution(t *testing.T) {
	s := startServer(t)

	gone, _ := createSandbox(t, s, sandboxInit(2))
	gone.sendJSON(t, execRequest("bash", "sleep 3; echo done"))
	gone.expectStatus(t, statusExecRunning)
	gone.drop()

	// A detached sandbox lives on (a client may re-attach): it is not
	// deleted with the connection, and certainly not while it executes.
	assert.Never(t, func() bool {
		ids, err := s.runscList()
		return err == nil && len(ids) == 0
	}, 2*time.Second, 100*time.Millisecond, "sandbox deleted as soon as its client left")

	// The server keeps serving others meanwhile.
	c, _ := createSandbox(t, s, sandboxInit(60))
	assert.Equal(t, "hello\n", c.run(t, "python", "print('hello')").Stdout)
	c.killSandbox(t)

	// The orphan is reaped by its idle timeout after the sleep ends:
	// roughly 3 s + 2 s from the drop.
	assertNoContainers(t, s, 30*time.Second)
}

func TestSIGTERMCleansUp(t *testing.T) {
	s := startServer(t)

	// Three sandboxes in different situations: idle, executing, and
	// detached (client gone mid-execution).
	createSandbox(t, s, sandboxInit(60))

	busy, _ := createSandbox(t, s, sandboxInit(60))
	busy.sendJSON(t, execRequest("bash", "sleep 100"))
	busy.expectStatus(t, statusExecRunning)

	detached, _ := createSandbox(t, s, sandboxInit(60))
	detached.sendJSON(t, execRequest("bash", "sleep 100 & sleep 100; wait"))
	detached.expectStatus(t, statusExecRunning)
	detached.drop()

	ids, err := s.runscList()
	require.NoError(t, err)
	require.Len(t, ids, 3)

	// The contract is "exit within about 10 s"; 12 s absorbs a loaded machine.
	const gracefulExit = 12 * time.Second
	code, exited := s.terminate(gracefulExit)
	require.True(t, exited, "server still running %s after SIGTERM", gracefulExit)
	assert.Equal(t, 0, code, "exit code after SIGTERM")

	ids, err = s.runscList()
	require.NoError(t, err)
	assert.Empty(t, ids, "containers left after SIGTERM")

	// Sandbox processes are reparented when the server exits; give init a
	// moment to reap them, but none may keep running.
	assert.EventuallyWithT(t, func(ct *assert.CollectT) {
		assert.Empty(ct, processesMentioning(s.stateDir), "processes still using the state dir")
	}, 5*time.Second, 100*time.Millisecond)

	mounts, err := mountsUnder(s.stateDir)
	require.NoError(t, err)
	assert.Empty(t, mounts, "mounts left under the state dir")
}

func TestSIGTERMCleansUpEvenWithoutALogReader(t *testing.T) {
	s := startServer(t)
	createSandbox(t, s, sandboxInit(60))
	// The log reader goes away (a crashed collector, a closed terminal):
	// the server's next log line hits a broken pipe, which must not kill
	// it before it has deleted its sandboxes.
	require.NoError(t, s.logR.Close())
	code, exited := s.terminate(12 * time.Second)
	require.True(t, exited, "server still running after SIGTERM")
	assert.Equal(t, 0, code)
	ids, err := s.runscList()
	require.NoError(t, err)
	assert.Empty(t, ids, "containers left after SIGTERM")
}

func TestRestartAfterCrashDeletesLeftovers(t *testing.T) {
	crashed := startServer(t)
	for i := 0; i < 2; i++ {
		c, _ := createSandbox(t, crashed, sandboxInit(0))
		if i == 0 {
			c.sendJSON(t, execRequest("bash", "sleep 100"))
			c.expectStatus(t, statusExecRunning)
		}
	}
	ids, err := crashed.runscList()
	require.NoError(t, err)
	require.Len(t, ids, 2)

	// A crash: no chance to clean up.
	require.NoError(t, crashed.cmd.Process.Kill())
	<-crashed.exited

	restarted := startServerIn(t, crashed.stateDir)
	ids, err = restarted.runscList()
	require.NoError(t, err)
	assert.Empty(t, ids, "containers of the crashed server survived the restart")
	bundles, err := os.ReadDir(filepath.Join(restarted.stateDir, "bundles"))
	require.NoError(t, err)
	assert.Empty(t, bundles, "bundles of the crashed server survived the restart")

	// And the restarted server works.
	c, _ := createSandbox(t, restarted, sandboxInit(60))
	res := c.run(t, "python", "print('alive')")
	assert.Equal(t, "alive\n", res.Stdout)
}

func TestStartupRefusesBadSetup(t *testing.T) {
	requirePrerequisites(t)
	dir := t.TempDir()
	oldRunsc := filepath.Join(dir, "old-runsc")
	// Like Debian's 2022 runsc: it runs, but has no `tar rootfs-upper`.
	require.NoError(t, os.WriteFile(oldRunsc, []byte("#!/bin/sh\necho 'Usage: runsc <flags> <subcommand>'\n"), 0o755))

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing runsc", []string{"--runsc", filepath.Join(dir, "nope")}, "make runsc"},
		{"runsc without tar rootfs-upper", []string{"--runsc", oldRunsc}, "rootfs-upper"},
		{"missing rootfs", []string{"--rootfs", filepath.Join(dir, "no-rootfs")}, "make rootfs"},
		{"host root as rootfs", []string{"--rootfs", "/"}, "host's /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"serve", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "state"),
				"--runsc", runscBinary, "--rootfs", rootfsDir}, tt.args...)
			cmd := exec.Command(serverBinary, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			done := make(chan error, 1)
			require.NoError(t, cmd.Start())
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				var exitErr *exec.ExitError
				require.ErrorAs(t, err, &exitErr, "the server must refuse to start")
				assert.Equal(t, 1, exitErr.ExitCode())
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatal("the server started despite a bad setup")
			}
			out := strings.TrimSpace(stderr.String())
			assert.Contains(t, out, tt.want)
			assert.NotContains(t, out, "\n", "the error is one line")
		})
	}
}
