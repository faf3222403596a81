// Package agent is sandpool-agent, the program that runs inside every
// sandbox (installed in the rootfs at Path).
//
// `agent init` is the sandbox's init process: it ignores every catchable
// signal, reaps every orphan and serves an abstract unix socket. `agent run
// -- argv...` is what `runsc exec` starts for an execution: a relay that
// hands argv, its environment, its cwd and its stdio (fds 0, 1 and 2, by
// SCM_RIGHTS) to init, which starts the program as its own child in a new
// session. gVisor kills every task of exec origin when it restores a
// checkpoint; a program started by init is not of exec origin, so the
// background jobs an execution leaves behind survive a checkpoint and
// restore.
//
// The relay only holds the program's place on the host: it drops its stdio
// once the program runs (output reaches EOF when the program and its
// children close it) and exits with the program's code (128+signal for a
// signal death). When it dies first and the host cannot learn the
// program's fate any more (no status pipe, or a restore, which kills every
// relay and leaves the host's pipes behind) init SIGKILLs the program's
// whole process group.
//
// Protocol, over one stream connection per execution: the relay sends one
// frame holding a Request, with its fds 0, 1, 2 (and the status pipe, if it
// has one) attached to the first byte; init answers a frame {"pid":N} once
// the program runs, or {"error":msg,"code":127} when it cannot start, then
// {"exited":true,"code":N} when it exits. A frame is a 4-byte big-endian
// length and JSON.
//
// The status pipe (`agent run --status-fd=N`) is the host's own view of
// the execution, in lines: init writes "pid N" once the program runs and
// "exit N" once it exited; a relay that runs the program itself (no agent
// init) writes "direct"; empty lines mean nothing. The host kills the
// program's group by that pid, and an execution whose relay was killed by
// user code goes on.
//
// Keep the protocol backward compatible: a sandbox restored from a
// checkpoint keeps the init it was taken with (make rootfs keeps every
// installed version), while its executions run the current relay.
package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
)

// Path is where the agent lives inside the sandbox's root filesystem.
const Path = "/.sandpool/agent"

// Socket is the abstract unix socket name init serves (an abstract name is
// no file, so it never lands in a filesystem snapshot).
const Socket = "sandpool-agent"

// Exit codes of an execution that never ran, as shells report them.
const (
	// CodeNotFound means the program does not exist.
	CodeNotFound = 127
	// CodeCannotExecute means the program exists but cannot be executed.
	CodeCannotExecute = 126
	// CodeAgentFailure means the relay could not reach init; it is the code
	// runsc itself exits with when it fails to run a command.
	CodeAgentFailure = 128
)

// maxFrame bounds a frame; a request carries the code as an argument, which
// execve already limits far below this.
const maxFrame = 64 << 20

// Request is what the relay asks init to run.
type Request struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Cwd  string   `json:"cwd"`
}

// reply is one of init's answers: started (Pid), could not start (Error and
// Code) or exited (Exited and Code).
type reply struct {
	Pid    int    `json:"pid,omitempty"`
	Error  string `json:"error,omitempty"`
	Exited bool   `json:"exited,omitempty"`
	Code   int    `json:"code"`
}

// frame encodes v as a frame.
func frame(v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	return append(out, body...), nil
}

// readFrame reads one frame from r into v.
func readFrame(r io.Reader, v any) error {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n > maxFrame {
		return errors.New("frame too large")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

// errNotFound is a program missing from PATH.
var errNotFound = errors.New("command not found")

// lookPath resolves argv0 as execve would after a shell's PATH search: a
// name with a slash is used as is (relative to cwd), any other is searched
// in the PATH of env (directories relative to cwd). It checks only what it
// must to report "command not found" as a shell does; execve has the last
// word.
func lookPath(argv0 string, env []string, cwd string) (string, error) {
	if argv0 == "" {
		return "", errNotFound
	}
	if strings.Contains(argv0, "/") {
		return argv0, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	var denied string
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		file := dir + "/" + argv0
		abs := file
		if !strings.HasPrefix(abs, "/") {
			abs = cwd + "/" + file
		}
		var st syscall.Stat_t
		if err := syscall.Stat(abs, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			continue
		}
		if st.Mode&0o111 == 0 {
			if denied == "" {
				denied = abs
			}
			continue
		}
		return abs, nil
	}
	if denied != "" {
		return denied, nil // execve reports EACCES
	}
	return "", errNotFound
}

// startFailure is the message and exit code for a program that could not
// start, worded as bash words them.
func startFailure(argv0 string, err error) (string, int) {
	switch {
	case errors.Is(err, errNotFound):
		return argv0 + ": command not found", CodeNotFound
	case errors.Is(err, syscall.ENOENT):
		return argv0 + ": No such file or directory", CodeNotFound
	default:
		var errno syscall.Errno
		if errors.As(err, &errno) {
			msg := errno.Error()
			if msg != "" {
				msg = strings.ToUpper(msg[:1]) + msg[1:]
			}
			return argv0 + ": " + msg, CodeCannotExecute
		}
		return argv0 + ": " + err.Error(), CodeCannotExecute
	}
}

// waitCode is an exit code as a shell reports it: the status, or
// 128+signal for a signal death.
func waitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// logf writes one line to stderr (init's stderr is the sandbox's runsc log).
func logf(parts ...string) {
	_, _ = os.Stderr.WriteString("sandpool-agent: " + strings.Join(parts, "") + "\n")
}
