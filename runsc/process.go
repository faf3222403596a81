package runsc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exec starts spec in sandbox id with `runsc exec`. The process spec goes
// through a file in the sandbox's private bundle, so arguments (the code)
// may be far larger than the host's per-argument limit. Unlike every other
// runsc call, an execution has no deadline of its own: it lives until it
// exits, is killed (kill_process, a timeout) or its sandbox is destroyed.
func (r *Runner) Exec(ctx context.Context, id string, spec ProcessSpec) (Process, error) {
	bundle := r.BundleDir(id)
	name := nextExecName()
	specPath := filepath.Join(bundle, name+".json")
	pidPath := filepath.Join(bundle, name+".pid")
	proc := execSpec(spec)
	if err := writeJSON(specPath, proc); err != nil {
		return nil, fmt.Errorf("exec in sandbox %s: %w", id, err)
	}
	p, err := r.startProcess(id, specPath, pidPath, usesRelay(proc))
	if err != nil {
		_ = os.Remove(specPath)
		return nil, fmt.Errorf("exec in sandbox %s: %w", id, err)
	}
	return p, nil
}

// startProcess runs runsc exec. With status, the process is the agent's
// relay and gets a status pipe as its fd 3 (see execStatus).
func (r *Runner) startProcess(id, specPath, pidPath string, status bool) (*cliProcess, error) {
	stdinR, stdinW, err := pipe(childReads)
	if err != nil {
		return nil, err
	}
	stdoutR, stdoutW, err := pipe(childWrites)
	if err != nil {
		closeAll(stdinR, stdinW)
		return nil, err
	}
	stderrR, stderrW, err := pipe(childWrites)
	if err != nil {
		closeAll(stdinR, stdinW, stdoutR, stdoutW)
		return nil, err
	}
	ours := []*os.File{stdinW, stdoutR, stderrR}
	theirs := []*os.File{stdinR, stdoutW, stderrW}
	args := []string{"exec", "--process=" + specPath, "--internal-pid-file=" + pidPath}
	var statusR, statusW *os.File
	if status {
		if statusR, statusW, err = pipe(childWrites); err != nil {
			closeAll(append(ours, theirs...)...)
			return nil, err
		}
		ours, theirs = append(ours, statusR), append(theirs, statusW)
		// ExtraFiles[0] is runsc's fd 3, which it hands on as the relay's.
		args = append(args, fmt.Sprintf("--pass-fd=3:%d", relayStatusFD))
	}
	cmd := r.command(append(args, id)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, stdoutW, stderrW
	if statusW != nil {
		cmd.ExtraFiles = []*os.File{statusW}
	}
	if err := cmd.Start(); err != nil {
		closeAll(append(ours, theirs...)...)
		return nil, err
	}
	// The child has its copies; ours would keep the pipes open forever.
	closeAll(theirs...)

	p := &cliProcess{
		runner:  r,
		id:      id,
		pid:     cmd.Process.Pid,
		pidPath: pidPath,
		stdin:   stdinW,
		stdout:  &drainReader{f: stdoutR},
		stderr:  &drainReader{f: stderrR},
		exited:  make(chan struct{}),
	}
	if statusR != nil {
		p.status = newExecStatus(statusR)
	}
	// The one goroutine that waits for runsc exec, then for the program
	// when the relay went first.
	go func() {
		err := cmd.Wait()
		p.exitCode = exitCode(cmd, err)
		if p.status != nil {
			if code, ok := p.status.afterExec(statusGrace); ok {
				p.exitCode, err = code, nil
			}
		}
		if p.exitCode < 0 {
			p.waitErr = err
		}
		close(p.exited)
		// Output still buffered in the pipes arrives within the drain
		// window; an orphan holding them open cannot stall the stream.
		deadline := time.Now().Add(r.cfg.OutputDrain)
		_ = stdoutR.SetReadDeadline(deadline)
		_ = stderrR.SetReadDeadline(deadline)
		_ = os.Remove(specPath)
		_ = os.Remove(pidPath)
	}()
	return p, nil
}

func exitCode(cmd *exec.Cmd, err error) int {
	if cmd.ProcessState == nil {
		return -1
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// pipeEnd says which end of a pipe the child gets.
type pipeEnd int

const (
	childReads pipeEnd = iota
	childWrites
)

// pipe returns a pipe (read end, write end) whose child end is blocking and
// whose end of ours is non-blocking (pollable, so reads take deadlines).
// os.Pipe makes both ends non-blocking, and gVisor hands that on to the
// sandboxed program: `python3 -u` then drops the rest of a short write
// whenever the pipe is full, silently losing output.
func pipe(child pipeEnd) (r, w *os.File, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	ours := fds[0]
	if child == childReads {
		ours = fds[1]
	}
	if err := unix.SetNonblock(ours, true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "pipe-r"), os.NewFile(uintptr(fds[1]), "pipe-w"), nil
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// cliProcess is an execution run by a host `runsc exec` process.
type cliProcess struct {
	runner  *Runner
	id      string
	pid     int // host pid of runsc exec (leader of its own group)
	pidPath string
	stdin   *os.File
	stdout  *drainReader
	stderr  *drainReader
	status  *execStatus // nil without the agent's relay

	exited   chan struct{}
	exitCode int
	waitErr  error
}

func (p *cliProcess) Stdin() io.WriteCloser { return p.stdin }
func (p *cliProcess) Stdout() io.Reader     { return p.stdout }
func (p *cliProcess) Stderr() io.Reader     { return p.stderr }

func (p *cliProcess) Wait() (int, error) {
	<-p.exited
	_ = p.stdin.Close()
	if p.waitErr != nil {
		return -1, fmt.Errorf("exec in sandbox %s: %w", p.id, p.waitErr)
	}
	return p.exitCode, nil
}

// Kill signals the program's process group inside the sandbox: the agent's
// init starts every program as the leader of a new session and group, and
// reports its pid on the status pipe; without the relay, runsc exec does
// the same for the process it starts, whose pid it writes to the pid file.
func (p *cliProcess) Kill(ctx context.Context) error {
	pgid, err := p.programPID(ctx)
	if err != nil {
		return err
	}
	if pgid == 0 {
		return nil // already gone
	}
	_, err = p.runner.run(ctx, "kill", "--pgid="+strconv.Itoa(pgid), p.id, "KILL")
	select {
	case <-p.exited:
		return nil // it died anyway; the group may have been gone already
	default:
	}
	if err != nil {
		return fmt.Errorf("kill process group %d in sandbox %s: %w", pgid, p.id, err)
	}
	return nil
}

// programPID waits for the in-sandbox pid of the program; 0 means the
// execution ended before that mattered.
func (p *cliProcess) programPID(ctx context.Context) (int, error) {
	if p.status != nil {
		select {
		case <-p.status.known:
			if pid := p.status.programPID(); pid != 0 {
				return pid, nil
			}
			// "direct": the relay became the program (pid file).
		case <-p.exited:
			return 0, nil
		case <-ctx.Done():
			return 0, fmt.Errorf("kill in sandbox %s: pid not known yet: %w", p.id, ctx.Err())
		}
	}
	return p.sandboxPID(ctx)
}

// sandboxPID waits for runsc exec to report the in-sandbox pid of the
// process it started; 0 means the process exited before that mattered.
func (p *cliProcess) sandboxPID(ctx context.Context) (int, error) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		data, err := os.ReadFile(p.pidPath)
		if err == nil && len(strings.TrimSpace(string(data))) > 0 {
			return strconv.Atoi(strings.TrimSpace(string(data)))
		}
		select {
		case <-p.exited:
			return 0, nil
		case <-ctx.Done():
			return 0, fmt.Errorf("kill in sandbox %s: pid not known yet: %w", p.id, ctx.Err())
		case <-tick.C:
		}
	}
}

// drainReader reads a pipe until EOF or until the drain deadline set after
// the process exited, which it reports as EOF.
type drainReader struct {
	f *os.File
	// Once the deadline passed, left is what the pipe still held then: a
	// slow reader (a full flow window) must not lose what the process wrote,
	// yet an orphan that keeps writing must not hold the stream open.
	deadlinePassed bool
	left           int
}

func (d *drainReader) Read(b []byte) (int, error) {
	n, err := d.f.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Past the deadline Go's Read fails without looking at the pipe.
		n, err = d.readBuffered(b)
	}
	if err != nil {
		_ = d.f.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) {
			err = io.EOF
		}
	}
	return n, err
}

// readBuffered reads, without waiting, from what the pipe held when the
// drain deadline passed; io.EOF once that is consumed.
func (d *drainReader) readBuffered(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	rc, err := d.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	n, rerr := 0, error(io.EOF)
	cerr := rc.Control(func(fd uintptr) {
		if !d.deadlinePassed {
			d.deadlinePassed = true
			// TIOCINQ is FIONREAD: the bytes waiting in the pipe.
			if left, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ); err == nil {
				d.left = left
			}
		}
		if d.left <= 0 {
			return
		}
		if m, err := unix.Read(int(fd), b[:min(len(b), d.left)]); err == nil && m > 0 {
			n, rerr = m, nil
			d.left -= m
		}
	})
	if cerr != nil {
		return 0, cerr
	}
	return n, rerr
}

// relayStatusFD is the relay's fd of the status pipe.
const relayStatusFD = 3

// statusGrace is how long a status line may trail runsc exec's exit.
const statusGrace = 50 * time.Millisecond

// execStatus reads the status pipe the agent reports an execution on:
// "pid N" once the program runs, "exit N" once it exited, "direct" when the
// relay runs the program itself (no agent init); empty lines mean nothing.
//
// The relay is one process among others in the sandbox, and user code may
// kill it (`kill -9 -1` spares only init and the caller): runsc exec then
// exits, but the program runs on, and the execution lasts until the
// status pipe reports its exit.
type execStatus struct {
	f     *os.File
	known chan struct{} // closed on "pid" or "direct"
	done  chan struct{} // closed once the reader stopped

	mu     sync.Mutex
	pid    int
	code   int
	exited bool
}

func newExecStatus(f *os.File) *execStatus {
	s := &execStatus{f: f, known: make(chan struct{}), done: make(chan struct{})}
	go s.read()
	return s
}

func (s *execStatus) read() {
	defer close(s.done)
	defer s.f.Close()
	br := bufio.NewReader(s.f)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return // EOF, or the grace after runsc exec's exit ran out
		}
		word, arg, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		n, nerr := strconv.Atoi(arg)
		s.mu.Lock()
		switch {
		case word == "pid" && nerr == nil && n > 0 && s.pid == 0:
			s.pid = n
			// The execution now lasts until its exit report.
			_ = s.f.SetReadDeadline(time.Time{})
			close(s.known)
		case word == "exit" && nerr == nil:
			s.code, s.exited = n, true
		case word == "direct" && s.pid == 0:
			s.pid = -1
			close(s.known)
		}
		s.mu.Unlock()
	}
}

func (s *execStatus) programPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.pid, 0)
}

// afterExec waits, once runsc exec exited, for what the status pipe still
// has to say: the program's exit code when it runs under init, or nothing
// (it never started, or the relay ran it itself), once the lines trailing
// runsc exec's exit had grace to arrive.
func (s *execStatus) afterExec(grace time.Duration) (code int, ok bool) {
	s.mu.Lock()
	if s.pid <= 0 {
		_ = s.f.SetReadDeadline(time.Now().Add(grace))
	}
	s.mu.Unlock()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code, s.exited
}
