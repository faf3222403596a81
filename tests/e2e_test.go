package tests

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tokenPattern: the token is 32 random bytes, hex encoded.
var tokenPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestCreateSequence(t *testing.T) {
	s := startServer(t)
	c := mustDial(t, s, "/create")
	c.sendJSON(t, sandboxInit(60))

	c.expectStatus(t, statusCreating)
	idEvent := c.next(t, eventTimeout)
	require.Equal(t, "sandbox_id", idEvent.Event, "second event must be sandbox_id, got %s", idEvent)
	assert.NotEmpty(t, idEvent.SandboxID)
	assert.Regexp(t, tokenPattern, idEvent.SandboxToken)
	c.expectStatus(t, statusRunning)

	// A second sandbox gets its own identity.
	_, other := createSandbox(t, s, sandboxInit(60))
	assert.NotEqual(t, idEvent.SandboxID, other.ID)
	assert.NotEqual(t, idEvent.SandboxToken, other.Token)
}

func TestExecuteOutput(t *testing.T) {
	s := startServer(t)
	// One sandbox runs every case in turn: this also checks that a sandbox
	// stays usable across executions.
	c, _ := createSandbox(t, s, sandboxInit(60))

	tests := []struct {
		name       string
		language   string
		code       string
		wantStdout string
		wantStderr string
		wantExit   int
	}{
		{"python print", "python", "print('hello')", "hello\n", "", 0},
		{"bash echo", "bash", "echo hello from bash", "hello from bash\n", "", 0},
		{"python stderr and exit 3", "python", "import sys; sys.stderr.write(\"oops\\n\"); sys.exit(3)", "", "oops\n", 3},
		{"bash both streams and exit 7", "bash", "echo out; echo err >&2; exit 7", "out\n", "err\n", 7},
		{"python multi-line program", "python", "for i in range(3):\n    print(i)\n", "0\n1\n2\n", "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := c.run(t, tc.language, tc.code)
			assert.Equal(t, tc.wantStdout, res.Stdout)
			assert.Equal(t, tc.wantStderr, res.Stderr)
			assert.Equal(t, tc.wantExit, res.ExitCode)
		})
	}
}

func TestFilesPersistBetweenExecutions(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))

	res := c.run(t, "python", "open('/tmp/e2e-note.txt', 'w').write('written by python\\n')")
	require.Equal(t, 0, res.ExitCode, "stderr: %s", res.Stderr)

	res = c.run(t, "bash", "cat /tmp/e2e-note.txt && echo 'appended by bash' >> /tmp/e2e-note.txt")
	assert.Equal(t, "written by python\n", res.Stdout)

	res = c.run(t, "python", "print(open('/tmp/e2e-note.txt').read(), end='')")
	assert.Equal(t, "written by python\nappended by bash\n", res.Stdout)
}

func TestSignalsToInitDoNotEndTheSandbox(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))
	// User code may signal PID 1 (by mistake or on purpose); the sandbox
	// must survive it, and kill -9 -1 must not take init down either.
	res := c.run(t, "bash", "for sig in TERM INT HUP QUIT USR1 PIPE; do kill -$sig 1; done; kill -9 -1; echo sent")
	require.Equal(t, 0, res.ExitCode, "stderr: %s", res.Stderr)
	assert.Equal(t, "sent\n", res.Stdout)
	res = c.run(t, "python", "print('still here')")
	assert.Equal(t, "still here\n", res.Stdout)
}

func TestStdin(t *testing.T) {
	s := startServer(t)

	t.Run("input answered through stdin", func(t *testing.T) {
		c, _ := createSandbox(t, s, sandboxInit(60))
		c.sendJSON(t, execRequest("python", "name = input()\nprint('hello ' + name)"))
		c.expectStatus(t, statusExecRunning)
		c.sendJSON(t, stdinMessage("world\n"))

		res := c.collect(t)
		assert.Equal(t, "hello world\n", res.Stdout)
		assert.Equal(t, 0, res.ExitCode)
	})

	t.Run("cat finished by close_stdin", func(t *testing.T) {
		c, _ := createSandbox(t, s, sandboxInit(60))
		c.sendJSON(t, execRequest("bash", "cat"))
		c.expectStatus(t, statusExecRunning)

		// Before any data: a stdin message without data is a stdin error
		// and the execution carries on.
		c.sendJSON(t, map[string]any{"event": "stdin"})
		c.expectError(t, statusStdinError)

		c.sendJSON(t, stdinMessage("line one\n"))
		c.sendJSON(t, stdinMessage("line two, no newline"))
		c.sendJSON(t, map[string]any{"action": "close_stdin"})

		res := c.collect(t)
		assert.Equal(t, "line one\nline two, no newline", res.Stdout)
		assert.Equal(t, 0, res.ExitCode)
	})
}

func stdinMessage(data string) map[string]any {
	return map[string]any{"event": "stdin", "data": data}
}

// findSleepersCode lists processes in the sandbox whose command line holds
// "sleep 100" (the killed children and their shell; the sandbox's own
// keepalive sleeps for a different time). The words are split in the source
// so this program never matches itself.
const findSleepersCode = `import os
needle = b'sl' + b'eep 100'
found = []
for pid in os.listdir('/proc'):
    if not pid.isdigit():
        continue
    try:
        with open('/proc/%s/cmdline' % pid, 'rb') as f:
            cmd = f.read().replace(b'\0', b' ')
    except OSError:
        continue
    if needle in cmd:
        found.append(pid + ':' + cmd.decode(errors='replace'))
print('count=%d %s' % (len(found), ' | '.join(found)))
`

func TestKillProcess(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))

	// A background child plus a foreground one: killing only the shell
	// would leave both holding the output pipe open and DONE would never
	// come. "started" proves the background sleep was forked.
	c.sendJSON(t, execRequest("bash", "sleep 100 & echo started; sleep 100; wait"))
	c.expectStatus(t, statusExecRunning)
	c.readStdoutUntil(t, "started\n")

	sent := time.Now()
	c.sendJSON(t, map[string]any{"action": "kill_process"})
	c.expectStatus(t, statusForceKilled)
	done := c.expectStatus(t, statusExecDone)
	assert.Less(t, time.Since(sent), time.Second, "FORCE_KILLED and DONE must follow kill_process within 1 s")
	if assert.NotNil(t, done.ExitCode, "DONE carries exit_code") {
		assert.NotZero(t, *done.ExitCode, "a killed process does not exit 0")
	}
	assert.Equal(t, "killed", done.Reason)

	// No sleep survived in the sandbox. Polled briefly because a SIGKILLed
	// orphan may take a moment to be reaped inside gVisor.
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		res, err := c.runE("python", findSleepersCode)
		if assert.NoError(ct, err) {
			assert.True(ct, strings.HasPrefix(res.Stdout, "count=0 "), "processes left: %q", res.Stdout)
		}
	}, 10*time.Second, 200*time.Millisecond)
}

// readStdoutUntil reads stdout events until their concatenation ends with
// suffix; any other event fails the test.
func (c *client) readStdoutUntil(t *testing.T, suffix string) {
	t.Helper()
	var got strings.Builder
	deadline := time.Now().Add(eventTimeout)
	for !strings.HasSuffix(got.String(), suffix) {
		ev := c.next(t, time.Until(deadline))
		require.Equal(t, "stdout", ev.Event, "waiting for stdout %q, got %s", suffix, ev)
		got.WriteString(ev.Data)
	}
}

func TestKillSandbox(t *testing.T) {
	s := startServer(t)
	c, sb := createSandbox(t, s, sandboxInit(60))

	ids, err := s.runscList()
	require.NoError(t, err)
	require.Len(t, ids, 1, "one live sandbox, one container")

	c.killSandbox(t)

	// DELETED means deleted: the container is gone by the time KILLED and
	// the close arrive.
	ids, err = s.runscList()
	require.NoError(t, err)
	assert.NotContains(t, ids, sb.ID)
	assert.Empty(t, ids, "runsc list after kill_sandbox")
}

func TestKillSandboxDuringExecution(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))

	c.sendJSON(t, execRequest("bash", "sleep 100"))
	c.expectStatus(t, statusExecRunning)
	c.sendJSON(t, map[string]any{"action": "kill_sandbox"})

	// The running execution's DONE comes between DELETING and DELETED.
	c.expectStatuses(t, eventTimeout, statusKilling, statusDeleting)
	done := c.expectStatus(t, statusExecDone)
	require.NotNil(t, done.ExitCode)
	assert.Equal(t, 137, *done.ExitCode, "killed with its sandbox, whatever runsc exec reported")
	assert.Equal(t, "sandbox_deleted", done.Reason)
	c.expectStatuses(t, eventTimeout, statusDeleted, statusKilled)
	c.expectClose(t, closeNormal)

	ids, err := s.runscList()
	require.NoError(t, err)
	assert.Empty(t, ids)
}

func TestLargeOutput(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))

	// 131072 numbered lines of 8 bytes = exactly 1 MiB, written in batches
	// so the program itself is quick even with unbuffered stdout.
	const lines = 1 << 17
	code := fmt.Sprintf(`import sys
batch = []
for i in range(%d):
    batch.append('%%07d\n' %% i)
    if len(batch) == 1000:
        sys.stdout.write(''.join(batch))
        batch = []
sys.stdout.write(''.join(batch))
`, lines)

	var want strings.Builder
	for i := 0; i < lines; i++ {
		fmt.Fprintf(&want, "%07d\n", i)
	}
	require.Equal(t, 1<<20, want.Len())

	res := c.run(t, "python", code)
	require.Equal(t, 0, res.ExitCode, "stderr: %s", res.Stderr)
	assertSameText(t, want.String(), res.Stdout)
	t.Logf("1 MiB arrived in %d stdout messages", len(res.StdoutChunks))
}

func TestLargeSingleWrite(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))
	// One write far larger than a pipe: gVisor completes it in parts.
	res := c.run(t, "python", "print('x' * 300000)")
	require.Equal(t, 0, res.ExitCode, "stderr: %s", res.Stderr)
	assertSameText(t, strings.Repeat("x", 300000)+"\n", res.Stdout)
}

// TestSlowClientLosesNothing fills every buffer on the way (the pipe, the
// actor's flow window, the socket) while the client does not read, so the
// program's writes block. Two traps are covered: a non-blocking pipe end
// makes programs like coreutils fail with EAGAIN, and gVisor completes a
// blocking pipe write only in part, which `python3 -u` silently truncates.
func TestSlowClientLosesNothing(t *testing.T) {
	const lines = 1024 * 1000 // 8.2 MB, twice the flow window
	var want strings.Builder
	for i := 0; i < lines; i++ {
		fmt.Fprintf(&want, "%07d\n", i)
	}
	tests := []struct {
		name, language, code string
	}{
		{"python unbuffered", "python", fmt.Sprintf(`import sys
for start in range(0, %d, 1000):
    sys.stdout.write(''.join('%%07d\n' %% i for i in range(start, start + 1000)))
`, lines)},
		{"coreutils", "bash", fmt.Sprintf(`seq -w 0 %d`, lines-1)},
	}
	s := startServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := createSandbox(t, s, sandboxInit(60))
			c.sendJSON(t, execRequest(tt.language, tt.code))
			c.expectStatus(t, statusExecRunning)
			time.Sleep(3 * time.Second) // the scenario: a client busy elsewhere reads nothing

			res := c.collect(t)
			require.Equal(t, 0, res.ExitCode, "stderr: %s", res.Stderr)
			assertSameText(t, want.String(), res.Stdout)
		})
	}
}

func TestInvalidUTF8Output(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))

	tests := []struct {
		name  string
		bytes string // a Python bytes literal body written to stdout
		want  string
	}{
		{"lone 0xff", `a\xffb\n`, "a\uFFFDb\n"},
		{"lead byte without continuation", `\xc3(\n`, "\uFFFD(\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Output must not stop at the bad bytes: a valid line follows.
			code := fmt.Sprintf("import sys\nsys.stdout.buffer.write(b\"%s\")\nsys.stdout.buffer.write(b\"after\\n\")\n", tc.bytes)
			res := c.run(t, "python", code)
			assert.Equal(t, tc.want+"after\n", res.Stdout)
			assert.Equal(t, 0, res.ExitCode, "stderr: %s", res.Stderr)
		})
	}
}

func TestMultiByteOutputNeverSplit(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))

	// 2-, 3- and 4-byte characters written by raw os.write calls of odd
	// sizes, so writes regularly end in the middle of a character; the
	// occasional pause makes the server see those boundaries as separate
	// reads.
	code := `import os, time
data = ('é' * 10000 + '€😀' * 1000).encode()
sizes = [1, 3, 5, 7, 11, 13]
i = k = 0
while i < len(data):
    n = sizes[k % len(sizes)]
    os.write(1, data[i:i + n])
    i += n
    k += 1
    if k % 64 == 0:
        time.sleep(0.001)
`
	want := strings.Repeat("é", 10000) + strings.Repeat("€😀", 1000)

	res := c.run(t, "python", code)
	require.Equal(t, 0, res.ExitCode, "stderr: %s", res.Stderr)
	for i, ev := range res.Output {
		// A split character shows up as U+FFFD after JSON decoding (the
		// server replaced it, or Go's decoder replaced raw invalid bytes).
		assert.True(t, utf8.Valid(ev.raw), "message %d is not valid UTF-8", i)
		assert.NotContains(t, ev.Data, "\uFFFD", "message %d split a character: %q", i, truncate(ev.Data, 40))
	}
	assertSameText(t, want, res.Stdout)
	t.Logf("%d bytes arrived in %d stdout messages", len(want), len(res.StdoutChunks))
}

func TestLargeCode(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))

	// A 1 MiB program: a comment padding it out, then one statement.
	tail := "\nprint('ok')\n"
	code := "# " + strings.Repeat("x", 1<<20-2-len(tail)) + tail
	require.Len(t, code, 1<<20)

	res := c.run(t, "python", code)
	assert.Equal(t, "ok\n", res.Stdout)
	assert.Equal(t, 0, res.ExitCode, "stderr: %s", truncate(res.Stderr, 500))
}

func TestExecutionAlreadyInProgress(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))

	c.sendJSON(t, execRequest("bash", "sleep 2; echo first"))
	c.expectStatus(t, statusExecRunning)

	c.sendJSON(t, execRequest("python", "print('second')"))
	rejected := c.expectError(t, statusExecError)
	assert.Equal(t, "An execution is already in progress.", rejected.Message)

	// The first execution is untouched.
	res := c.collect(t)
	assert.Equal(t, "first\n", res.Stdout)
	assert.Equal(t, 0, res.ExitCode)

	assert.Equal(t, "third\n", c.run(t, "python", "print('third')").Stdout)
}

func TestUnsupportedLanguage(t *testing.T) {
	s := startServer(t)
	c, _ := createSandbox(t, s, sandboxInit(60))

	tests := []struct {
		name        string
		request     map[string]any
		wantMessage string // "" when only the status is part of the contract
	}{
		{
			name:        "ruby",
			request:     execRequest("ruby", "puts 1"),
			wantMessage: "Unsupported language: 'ruby'. Supported languages are: python, bash",
		},
		{
			name:    "missing language",
			request: map[string]any{"code": "print(1)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.sendJSON(t, tc.request)
			ev := c.expectError(t, statusUnsupportedLang)
			if tc.wantMessage != "" {
				assert.Equal(t, tc.wantMessage, ev.Message)
			}
			// Nothing else runs, so the "execution" ends with DONE.
			c.expectStatus(t, statusExecDone)

			assert.Equal(t, "still works\n", c.run(t, "python", "print('still works')").Stdout)
		})
	}
}

func TestConcurrentSandboxes(t *testing.T) {
	const n = 20
	s := startServer(t, "--max-sandboxes", "64")

	type outcome struct {
		c   *client
		sb  created
		res result
		err error
	}
	outcomes := make([]outcome, n)

	var mu sync.Mutex // guards conns: the cleanup may run while goroutines still dial
	var conns []*client
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.close()
		}
	})

	// Each sandbox writes its index to the same path and prints it: the
	// second round below proves the filesystems are separate.
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := dial(s.wsURL("/create"))
			if err != nil {
				outcomes[i].err = err
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()

			out := outcome{c: c}
			if out.sb, out.err = c.createE(sandboxInit(60)); out.err == nil {
				code := fmt.Sprintf("open('/tmp/me', 'w').write('%d')\nprint('sandbox %d')", i, i)
				out.res, out.err = c.runE("python", code)
			}
			outcomes[i] = out
		}(i)
	}
	waitGroupWithin(t, &wg, 120*time.Second)

	ids := map[string]bool{}
	for i, out := range outcomes {
		require.NoError(t, out.err, "sandbox %d", i)
		assert.Equal(t, fmt.Sprintf("sandbox %d\n", i), out.res.Stdout, "sandbox %d", i)
		ids[out.sb.ID] = true
	}
	assert.Len(t, ids, n, "every sandbox has its own id")

	containers, err := s.runscList()
	require.NoError(t, err)
	assert.Len(t, containers, n, "one container per sandbox")

	for i, out := range outcomes {
		res := out.c.run(t, "python", "print(open('/tmp/me').read())")
		assert.Equal(t, fmt.Sprintf("%d\n", i), res.Stdout, "sandbox %d saw another sandbox's file", i)
	}
	for _, out := range outcomes {
		out.c.killSandbox(t)
	}
	assertNoContainers(t, s, 30*time.Second)
}

// waitGroupWithin fails the test when wg does not finish in time.
func waitGroupWithin(t *testing.T, wg *sync.WaitGroup, timeout time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		require.FailNow(t, "goroutines did not finish", "waited %s", timeout)
	}
}

// assertNoContainers waits until runsc list on the server's root is empty.
func assertNoContainers(t *testing.T, s *server, timeout time.Duration) {
	t.Helper()
	assert.EventuallyWithT(t, func(ct *assert.CollectT) {
		ids, err := s.runscList()
		assert.NoError(ct, err)
		assert.Empty(ct, ids, "containers left under %s", s.runscRoot)
	}, timeout, 100*time.Millisecond)
}

// assertSameText compares long texts and reports the first difference
// instead of dumping megabytes.
func assertSameText(t *testing.T, want, got string) {
	t.Helper()
	if want == got {
		return
	}
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	from := max(0, i-40)
	assert.Failf(t, "texts differ",
		"want %d bytes, got %d; first difference at byte %d:\nwant ...%q\ngot  ...%q",
		len(want), len(got), i, want[from:min(len(want), i+40)], got[from:min(len(got), i+40)])
}
