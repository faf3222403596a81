package agent

import (
	"errors"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Init is the sandbox's init process: it serves the abstract unix socket
// name until the sandbox ends, and returns only when it cannot listen.
// Each connection is one execution (see the package comment).
//
// It catches every catchable signal and drops it: a `kill 1` in user code
// must not stop the sandbox. Catching rather than ignoring matters: an
// ignored signal stays ignored in every child, a caught one is reset to
// its default. It reaps every child and orphan with wait4(-1) on SIGCHLD.
func Init(name string) error {
	// It runs in every sandbox and is idle nearly all the time.
	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(20)

	d := &daemon{children: make(map[int]*child)}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals) // every signal
	go func() {
		for sig := range signals {
			if sig == syscall.SIGCHLD {
				d.reap()
			}
		}
	}()
	// A child that exited before Notify took effect signalled the old
	// disposition.
	d.reap()

	ln, err := listen(name)
	if err != nil {
		return err
	}
	for {
		conn, err := ln.accept()
		if err != nil {
			// Out of fds or memory, most likely: exiting would stop the
			// sandbox and every background job in it.
			logf(err.Error())
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go d.serve(conn)
	}
}

// daemon is init's state: the programs it started that are not reaped yet.
type daemon struct {
	// mu orders reaping against starting and killing: a pid is in
	// children from its fork until the reaper collected it, so a kill of
	// its group never reaches a group whose id was reused.
	mu       sync.Mutex
	children map[int]*child
}

type child struct {
	done chan int // its exit code, once reaped
}

// reap collects every child that exited and reports those init started.
func (d *daemon) reap() {
	for {
		d.mu.Lock()
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == nil && pid > 0 {
			if c, ok := d.children[pid]; ok {
				delete(d.children, pid)
				c.done <- waitCode(ws)
			}
		}
		d.mu.Unlock()
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}

// serve runs one execution: the request, the program, its reports, and
// the kill of its group when the relay goes away first and nobody else can
// learn the program's fate.
func (d *daemon) serve(conn *conn) {
	defer conn.close()
	req, fds, err := conn.readRequest()
	if err != nil {
		closeFDs(fds)
		if !errors.Is(err, io.EOF) {
			logf("request: ", err.Error())
		}
		return
	}
	if (len(fds) != 3 && len(fds) != 4) || len(req.Argv) == 0 {
		closeFDs(fds)
		_ = conn.send(reply{Error: "sandpool-agent: a request needs argv and 3 or 4 fds", Code: CodeAgentFailure})
		return
	}
	status := -1
	if len(fds) == 4 {
		status = fds[3]
		defer syscall.Close(status)
	}

	pid, c, err := d.start(req, fds[:3])
	// The program has its copies; init's would keep its output open.
	closeFDs(fds[:3])
	if err != nil {
		msg, code := startFailure(req.Argv[0], err)
		_ = conn.send(reply{Error: msg, Code: code})
		return
	}
	report(status, "pid "+strconv.Itoa(pid))
	if err := conn.send(reply{Pid: pid}); err != nil {
		d.relayGone(pid, status)
	} else {
		relayGone := make(chan struct{})
		go func() {
			conn.waitClosed()
			close(relayGone)
		}()
		select {
		case code := <-c.done:
			report(status, "exit "+strconv.Itoa(code))
			_ = conn.send(reply{Exited: true, Code: code})
			return
		case <-relayGone:
			d.relayGone(pid, status)
		}
	}
	report(status, "exit "+strconv.Itoa(<-c.done))
}

// relayGone handles a relay that died before its program. With a status
// pipe that still reaches the host, the execution goes on: the host learns
// its end there and kills it by its pid (user code may have killed the
// relay: `kill -9 -1` spares only init and the caller). Without one
// (restored from a checkpoint, where the host's pipes are gone, or a relay
// started by hand) nobody could, and the program's group is killed.
func (d *daemon) relayGone(pid, status int) {
	if status >= 0 {
		// An empty line is no report; writing it tells whether the host
		// still reads.
		if _, err := syscall.Write(status, []byte("\n")); err == nil {
			return
		}
	}
	d.killGroup(pid)
}

// report writes one line on the status pipe, if there is one.
func report(status int, line string) {
	if status >= 0 {
		_, _ = syscall.Write(status, []byte(line+"\n"))
	}
}

// start forks and execs the program in a session of its own, with the
// relay's fds as its stdio.
func (d *daemon) start(req Request, fds []int) (int, *child, error) {
	path, err := lookPath(req.Argv[0], req.Env, req.Cwd)
	if err != nil {
		return 0, nil, err
	}
	attr := &syscall.ProcAttr{
		Dir:   req.Cwd,
		Env:   req.Env,
		Files: []uintptr{uintptr(fds[0]), uintptr(fds[1]), uintptr(fds[2])},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	pid, err := syscall.ForkExec(path, req.Argv, attr)
	if err != nil {
		return 0, nil, err
	}
	c := &child{done: make(chan int, 1)}
	d.children[pid] = c
	return pid, c, nil
}

// killGroup SIGKILLs the program's process group (its pid, as it leads its
// own session) unless it was reaped already.
func (d *daemon) killGroup(pid int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.children[pid]; ok {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL) // in case it left its group
	}
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		_ = syscall.Close(fd)
	}
}

// listener is a non-blocking listening socket served by Go's poller, so
// an idle init blocks no thread.
type listener struct {
	f  *os.File
	rc syscall.RawConn
}

func listen(name string) (*listener, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: "@" + name}); err != nil {
		_ = syscall.Close(fd)
		return nil, os.NewSyscallError("bind @"+name, err)
	}
	if err := syscall.Listen(fd, 128); err != nil {
		_ = syscall.Close(fd)
		return nil, os.NewSyscallError("listen", err)
	}
	f := os.NewFile(uintptr(fd), "@"+name)
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &listener{f: f, rc: rc}, nil
}

func (l *listener) accept() (*conn, error) {
	var nfd int
	var aerr error
	err := l.rc.Read(func(fd uintptr) bool {
		nfd, _, aerr = syscall.Accept4(int(fd), syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK)
		return !errors.Is(aerr, syscall.EAGAIN)
	})
	if err == nil {
		err = aerr
	}
	if err != nil {
		return nil, os.NewSyscallError("accept", err)
	}
	f := os.NewFile(uintptr(nfd), "conn")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &conn{f: f, rc: rc}, nil
}

// conn is init's end of one relay's connection.
type conn struct {
	f  *os.File
	rc syscall.RawConn
}

func (c *conn) close() { _ = c.f.Close() }

// readRequest reads the request frame and the fds sent with it (received
// close-on-exec, so a concurrent fork never inherits them).
func (c *conn) readRequest() (Request, []int, error) {
	var req Request
	r := &rightsReader{c: c}
	err := readFrame(r, &req)
	return req, r.fds, err
}

// rightsReader reads the connection with recvmsg, keeping every fd that
// arrives with the data.
type rightsReader struct {
	c   *conn
	fds []int
}

func (r *rightsReader) Read(b []byte) (int, error) {
	oob := make([]byte, syscall.CmsgSpace(16*4))
	var n, oobn int
	var rerr error
	err := r.c.rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = syscall.Recvmsg(int(fd), b, oob, syscall.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, syscall.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if oobn > 0 {
		if msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for _, m := range msgs {
				if fds, perr := syscall.ParseUnixRights(&m); perr == nil {
					r.fds = append(r.fds, fds...)
				}
			}
		}
	}
	if err != nil {
		return 0, err
	}
	if n == 0 && len(b) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (c *conn) send(v reply) error {
	b, err := frame(v)
	if err != nil {
		return err
	}
	_, err = c.f.Write(b)
	return err
}

// waitClosed returns once the relay closed its end (it exited or was
// killed); the relay sends nothing after its request.
func (c *conn) waitClosed() {
	var buf [64]byte
	for {
		if _, err := c.f.Read(buf[:]); err != nil {
			return
		}
	}
}
