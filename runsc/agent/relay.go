package agent

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"time"
)

// connectWait is how long the relay retries reaching init: the first
// execution may race init's listen.
const connectWait = 2 * time.Second

// Options are the relay's settings besides argv.
type Options struct {
	// Socket is the abstract socket name init serves.
	Socket string
	// StatusFD, when >= 0, is a pipe to the host that init reports the
	// execution on: "pid N" once the program runs, "exit N" once it
	// exited (see the package comment). The host then knows the program's
	// pid, and an execution survives the relay (user code may kill it:
	// `kill -9 -1` spares only init and the caller).
	StatusFD int
	// Fallback: a relay whose PID 1 is not the agent (a sandbox restored
	// from a checkpoint older than the agent) runs argv itself, by execve,
	// as runsc exec ran it before the agent existed, and says "direct" on
	// the status pipe.
	Fallback bool
}

// Run is the relay: it asks init to run argv with this process's
// environment, cwd and stdio, and returns the program's exit code.
// Messages about a program that cannot start go to stderr.
func Run(argv []string, opts Options) int {
	if len(argv) == 0 {
		logf("run: no command")
		return CodeAgentFailure
	}
	env := os.Environ()
	cwd, err := os.Getwd()
	if err != nil {
		logf("run: cwd: ", err.Error())
		return CodeAgentFailure
	}
	fd, err := dial(opts.Socket, opts.Fallback)
	if errors.Is(err, errNoAgent) {
		if opts.StatusFD >= 0 {
			_, _ = syscall.Write(opts.StatusFD, []byte("direct\n"))
			_ = syscall.Close(opts.StatusFD)
		}
		return execDirect(argv, env, cwd)
	}
	if err != nil {
		logf("cannot reach the sandbox's init: ", err.Error())
		return CodeAgentFailure
	}
	conn := os.NewFile(uintptr(fd), "@"+opts.Socket)
	defer conn.Close()

	fds := []int{0, 1, 2}
	if opts.StatusFD >= 0 {
		fds = append(fds, opts.StatusFD)
	}
	if err := sendRequest(fd, Request{Argv: argv, Env: env, Cwd: cwd}, fds); err != nil {
		logf("sending the request to init: ", err.Error())
		return CodeAgentFailure
	}
	var started reply
	if err := readFrame(conn, &started); err != nil {
		logf("init did not answer: ", err.Error())
		return CodeAgentFailure
	}
	if started.Pid == 0 {
		_, _ = os.Stderr.WriteString(started.Error + "\n")
		return started.Code
	}
	// Only the program holds the execution's pipes from now on: the
	// output reaches EOF when the program (and what it left behind) is
	// done with it, not when the relay is.
	dropStdio()
	if opts.StatusFD > 2 {
		_ = syscall.Close(opts.StatusFD)
	}
	var exited reply
	if err := readFrame(conn, &exited); err != nil || !exited.Exited {
		return CodeAgentFailure
	}
	return exited.Code
}

// errNoAgent means PID 1 is not the agent: nothing will ever listen.
var errNoAgent = errors.New("pid 1 is not sandpool-agent")

// dial connects to init's socket, retrying while it does not listen yet.
func dial(name string, fallback bool) (int, error) {
	deadline := time.Now().Add(connectWait)
	for first := true; ; first = false {
		fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, os.NewSyscallError("socket", err)
		}
		err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: "@" + name})
		if err == nil {
			return fd, nil
		}
		_ = syscall.Close(fd)
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EAGAIN) {
			return -1, os.NewSyscallError("connect @"+name, err)
		}
		if first && fallback && !initIsAgent() {
			return -1, errNoAgent
		}
		if time.Now().After(deadline) {
			return -1, os.NewSyscallError("connect @"+name, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// initIsAgent reports whether PID 1 runs `agent init`.
func initIsAgent() bool {
	cmdline, err := os.ReadFile("/proc/1/cmdline")
	if err != nil {
		return true // cannot tell: keep trying the socket
	}
	args := strings.Split(string(cmdline), "\x00")
	return len(args) >= 2 && args[0] == Path && args[1] == "init"
}

// sendRequest writes the request frame with fds attached.
func sendRequest(fd int, req Request, fds []int) error {
	b, err := frame(req)
	if err != nil {
		return err
	}
	rights := syscall.UnixRights(fds...)
	for len(b) > 0 {
		n, err := syscall.SendmsgN(fd, b, rights, nil, 0)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b, rights = b[n:], nil // the fds went with the first byte
	}
	return nil
}

// dropStdio points fds 0, 1 and 2 at /dev/null.
func dropStdio() {
	null, err := syscall.Open("/dev/null", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	for fd := 0; fd <= 2; fd++ {
		if err == nil {
			_ = syscall.Dup3(null, fd, 0)
		} else {
			_ = syscall.Close(fd)
		}
	}
	if err == nil {
		_ = syscall.Close(null)
	}
}

// execDirect replaces the relay with the program (no agent to ask).
func execDirect(argv, env []string, cwd string) int {
	path, err := lookPath(argv[0], env, cwd)
	if err == nil {
		err = syscall.Exec(path, argv, env)
	}
	msg, code := startFailure(argv[0], err)
	_, _ = os.Stderr.WriteString(msg + "\n")
	return code
}
