package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/proto"
)

// DaemonArg0 is the daemon's program name: a client starts the perflockd
// found by daemonProgram, under this name.
const DaemonArg0 = "perflockd"

// daemonProgram finds the perflockd a client starts: the one beside the
// running program (an installation keeps them together, and a build
// writes them together), else the first in PATH. A variable so that tests
// can start themselves.
var daemonProgram = func() (string, error) {
	self, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(self), DaemonArg0)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(DaemonArg0); err == nil {
		return p, nil
	}
	where := "the running program's folder"
	if self != "" {
		where = filepath.Dir(self)
	}
	return "", fmt.Errorf("no %s program in %s or in PATH: install perflock whole, or start a daemon yourself", DaemonArg0, where)
}

// Autostart parameters.
const (
	autostartWait     = 5 * time.Second  // how long to retry connecting after starting a daemon
	autostartIdleExit = "60s"            // --idle-exit of an autostarted daemon
	handshakeTimeout  = 10 * time.Second // for the daemon's hello
	// refusalReadFor bounds the read of what a daemon said before closing
	// a connection whose hello could not be written.
	refusalReadFor = 500 * time.Millisecond
	// logTailLines and logTailBytes bound what a client quotes from the log
	// of a daemon it started that exited at once.
	logTailLines = 5
	logTailBytes = 2048
)

// A daemon that accepts more slowly than connections arrive has a full
// listen queue, and connect(2) to it fails at once with EAGAIN. Clients
// retry, after short waits that grow from connectRetryMin to
// connectRetryMax, each drawn at random between half and all of its
// length (so that clients refused together do not come back together).
const (
	connectRetryMin = 2 * time.Millisecond
	connectRetryMax = 100 * time.Millisecond
)

// Variables so that tests can shorten them.
var (
	// connectFor bounds how long a client retries a full listen queue.
	connectFor = 30 * time.Second
	// connectNoticeAfter is how long a client retries before it says that
	// it waits to connect.
	connectNoticeAfter = time.Second
)

// conn is one conversation with the daemon: a hello, then one request.
// Messages arrive on msgs from a reader goroutine that close waits for.
type conn struct {
	uc    *net.UnixConn
	r     *proto.Reader // the handshake's, then readLoop's
	hello proto.Msg     // the daemon's hello

	msgs chan received
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// received is one message, or the error that ended the stream.
type received struct {
	msg proto.Msg
	err error
}

// dialOpts say how a client reaches the daemon.
type dialOpts struct {
	// client names the program in the hello.
	client string
	// noStart keeps a client from starting a daemon even on the per-user
	// socket (wholock --watch reconnecting).
	noStart bool
	// busyFor bounds the retries of a full listen queue (perfrun -t);
	// 0 or more than connectFor: connectFor.
	busyFor time.Duration
	// waiting, when not nil, is told once, with a sentence to show the
	// user, when connecting has taken connectNoticeAfter.
	waiting func(msg string)
	// first, when not nil, makes the request that goes out in the same
	// write as the hello, before the daemon's hello is read: a round trip
	// less. It is made once connected, so that a timeout it carries counts
	// the wait to connect. A daemon that refuses the hello never reads it.
	first func() proto.Msg
}

// noticeTo is a dialOpts.waiting that writes "PROGRAM: MSG" lines to w.
func noticeTo(w io.Writer, program string) func(string) {
	if w == nil {
		return nil
	}
	return func(msg string) { fmt.Fprintf(w, "%s: %s\n", program, msg) }
}

// dial connects to the daemon at sock and does the handshake. It starts a
// daemon first when sock is the per-user default socket (sock.PerUser),
// nothing listens there and o.noStart is not set; a full listen queue is
// retried (see connectFor). Failures wrap ErrUnavailable (also
// ErrOverloaded when the daemon did not take the connection: its listen
// queue stayed full, or it refused it at its connection limit), or
// ErrVersion, with a message that says what to do.
func dial(ctx context.Context, sock Socket, o dialOpts) (*conn, error) {
	uc, err := connect(ctx, sock.Path, o)
	if err != nil && sock.PerUser && !o.noStart && noListener(err) {
		uc, err = autostart(ctx, sock, o)
	}
	if err != nil {
		return nil, unavailable(sock, err)
	}
	c := &conn{uc: uc}
	if err := c.handshake(o.client, o.first); err != nil {
		uc.Close()
		if errors.Is(err, ErrVersion) {
			return nil, err
		}
		return nil, unavailable(sock, err)
	}
	c.msgs = make(chan received)
	c.stop = make(chan struct{})
	c.wg.Add(1)
	go c.readLoop(c.r)
	return c, nil
}

// connect connects to path, retrying while the listen queue is full, for
// up to o.busyFor (or connectFor) and until ctx is done. When that runs
// out it returns an error that wraps ErrOverloaded.
func connect(ctx context.Context, path string, o dialOpts) (*net.UnixConn, error) {
	limit := connectFor
	if o.busyFor > 0 && o.busyFor < limit {
		limit = o.busyFor
	}
	start := time.Now()
	told := o.waiting == nil
	wait := connectRetryMin
	for {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return nc.(*net.UnixConn), nil
		}
		if !errors.Is(err, syscall.EAGAIN) {
			return nil, err
		}
		waited := time.Since(start)
		if waited >= limit {
			return nil, refusedError{what: fmt.Sprintf("is overloaded: its queue of new connections stayed full for %s; try again later",
				friendlyDuration(limit)), overloaded: true}
		}
		if !told && waited >= connectNoticeAfter {
			o.waiting("waiting to connect to perflockd at " + path + ": its queue of new connections is full (it is overloaded)")
			told = true
		}
		sleep := wait/2 + rand.N(wait/2+1)
		sleep = min(sleep, limit-waited)
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, connectRetryMax)
	}
}

// refusedError: the daemon did not take the connection: it is overloaded
// (ErrOverloaded), or it answered our hello with an error (ErrDaemon). Its
// text follows "perflockd at PATH".
type refusedError struct {
	what       string
	overloaded bool
}

func (e refusedError) Error() string { return e.what }

func (e refusedError) Is(target error) bool {
	return target == ErrOverloaded && e.overloaded || target == ErrDaemon && !e.overloaded
}

// noListener reports whether a connect error means that no daemon listens.
func noListener(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

// unavailable wraps a failure to reach the daemon at sock in
// ErrUnavailable, with what to do about it.
func unavailable(sock Socket, err error) error {
	var exited daemonExitedError
	var refused refusedError
	switch {
	case errors.As(err, &refused):
		return fmt.Errorf("%w: perflockd at %s %w", ErrUnavailable, sock.Path, err)
	case errors.As(err, &exited):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case sock.System:
		return fmt.Errorf("%w: cannot reach the system perflockd at %s: %v; ask an administrator to start it (systemctl start perflockd), or set %s to use a per-user daemon",
			ErrUnavailable, sock.Path, err, EnvSocket)
	case !sock.PerUser && noListener(err):
		return fmt.Errorf("%w: no perflockd listens at %s, which %s names (%v); start one there with 'perflockd --socket %s', or %s to use the system daemon or your own per-user one",
			ErrUnavailable, sock.Path, sock.NamedBy, err, sock.Path, sock.without())
	case !sock.PerUser:
		return fmt.Errorf("%w: cannot reach perflockd at %s, which %s names: %v", ErrUnavailable, sock.Path, sock.NamedBy, err)
	}
	return fmt.Errorf("%w: cannot reach or start perflockd at %s: %v; start it by hand with 'perflockd --socket %s' and check %s",
		ErrUnavailable, sock.Path, err, sock.Path, sock.LogPath())
}

// autostart starts a detached daemon for sock and retries connecting, with
// backoff, for up to autostartWait. Two clients may start daemons at once:
// the daemon's single-instance lock lets one of them serve (the other
// exits 0), and both clients connect to it. A daemon that fails (exits
// with another status) is reported at once, with the end of its log.
func autostart(ctx context.Context, sock Socket, o dialOpts) (*net.UnixConn, error) {
	d, err := startDaemon(sock)
	if err != nil {
		return nil, err
	}
	defer d.release()
	deadline := time.Now().Add(autostartWait)
	backoff := 10 * time.Millisecond
	for {
		uc, err := connect(ctx, sock.Path, o)
		if err == nil || !noListener(err) {
			return uc, err
		}
		if err := d.failed(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("started a daemon but it did not listen within %v (%w)", autostartWait, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// startedDaemon is a daemon this client started: a child until it exits or
// the client lets it go.
type startedDaemon struct {
	proc    *os.Process
	reaped  bool
	log     string
	logFrom int64 // the log's size before the daemon started
}

// startDaemon starts "perflockd --socket PATH --idle-exit 60s" (see
// daemonProgram) in a new session, with stdin from /dev/null and output
// appended to the log next to the socket. It does not wait for it.
func startDaemon(sock Socket) (*startedDaemon, error) {
	prog, err := daemonProgram()
	if err != nil {
		return nil, fmt.Errorf("cannot start perflockd: %w", err)
	}
	if fi, err := os.Stat(filepath.Dir(sock.Path)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("socket directory %s does not exist", filepath.Dir(sock.Path))
	}
	logf, err := os.OpenFile(sock.LogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open daemon log: %w", err)
	}
	defer logf.Close()
	d := &startedDaemon{log: sock.LogPath()}
	if fi, err := logf.Stat(); err == nil {
		d.logFrom = fi.Size()
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer null.Close()
	cmd := &exec.Cmd{
		Path:        prog,
		Args:        []string{DaemonArg0, "--socket", sock.Path, "--idle-exit", autostartIdleExit},
		Dir:         "/",
		Stdin:       null,
		Stdout:      logf,
		Stderr:      logf,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start perflockd: %w", err)
	}
	d.proc = cmd.Process
	return d, nil
}

// failed reports, without waiting, a daemon that has exited with a status
// other than 0 (0: another daemon serves the socket), as a
// daemonExitedError; nil while it runs or when it exited 0.
func (d *startedDaemon) failed() error {
	if d.reaped {
		return nil
	}
	var ws unix.WaitStatus
	pid, err := unix.Wait4(d.proc.Pid, &ws, unix.WNOHANG, nil)
	if err != nil || pid != d.proc.Pid {
		return nil // still running (or not ours to wait for)
	}
	d.reaped = true
	if ws.Exited() && ws.ExitStatus() == 0 {
		return nil
	}
	how := fmt.Sprintf("exit status %d", ws.ExitStatus())
	if ws.Signaled() {
		how = fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	}
	return daemonExitedError{how: how, log: d.log, tail: logTail(d.log, d.logFrom)}
}

// release lets a daemon that still runs go on by itself.
func (d *startedDaemon) release() {
	if !d.reaped {
		d.proc.Release()
	}
}

// daemonExitedError: a daemon this client started exited at once.
type daemonExitedError struct {
	how  string   // "exit status 69"
	log  string   // its log file
	tail []string // the last lines it wrote there
}

func (e daemonExitedError) Error() string {
	s := fmt.Sprintf("the per-user perflockd started on demand exited at once (%s)", e.how)
	if len(e.tail) == 0 {
		return s + "; its log " + e.log + " says nothing more"
	}
	return s + "; the end of its log " + e.log + ":\n  " + strings.Join(e.tail, "\n  ")
}

// logTail is the last lines written to the log file path after offset
// from: at most logTailLines lines of the last logTailBytes bytes, made
// printable.
func logTail(path string, from int64) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size()-from > logTailBytes {
		from = fi.Size() - logTailBytes
	}
	b, err := io.ReadAll(io.NewSectionReader(f, from, logTailBytes))
	if err != nil {
		return nil
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, printable(l))
		}
	}
	return lines[max(0, len(lines)-logTailLines):]
}

// handshake sends hello, and first's request with it when first is not
// nil, and reads the daemon's hello.
func (c *conn) handshake(client string, first func() proto.Msg) error {
	c.r = proto.NewReader(c.uc)
	if err := c.uc.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return err
	}
	out, err := proto.Encode(proto.Msg{Type: proto.THello, Version: proto.Version, Client: client})
	if err == nil && first != nil {
		var b []byte
		if b, err = proto.Encode(first()); err == nil {
			out = append(out, b...)
		}
	}
	if err != nil {
		return fmt.Errorf("encode hello: %w", err)
	}
	if _, err := c.uc.Write(out); err != nil {
		// A daemon that refuses the connection (a limit) says why and
		// closes without reading our hello, which then fails to go out
		// (EPIPE): what it said is still there to read.
		c.uc.SetReadDeadline(time.Now().Add(refusalReadFor))
		if m, rerr := c.r.Read(); rerr == nil && m.Type == proto.TError {
			return refusal(m)
		}
		return fmt.Errorf("send hello: %w", err)
	}
	// The reader readLoop goes on with: what it has buffered is not lost.
	m, err := c.r.Read()
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	switch m.Type {
	case proto.THello:
	case proto.TError:
		return refusal(m)
	default:
		return fmt.Errorf("expected hello, got %s", m.Type)
	}
	c.hello = m
	return c.uc.SetDeadline(time.Time{})
}

// refusal is the error for a daemon's answer of error to our hello.
func refusal(m proto.Msg) error {
	switch m.Code {
	case proto.CodeVersion:
		return fmt.Errorf("%w: %s (this client speaks version %d; upgrade perflock or restart perflockd)", ErrVersion, printable(m.Message), proto.Version)
	case proto.CodeLimit:
		msg := printable(m.Message)
		if msg == "" {
			msg = "perflockd has too many connections: try again later"
		}
		return refusedError{what: "refused the connection: " + msg, overloaded: true}
	}
	return refusedError{what: fmt.Sprintf("refused the connection: %s: %s", printable(m.Code), printable(m.Message))}
}

func (c *conn) readLoop(r *proto.Reader) {
	defer c.wg.Done()
	for {
		m, err := r.Read()
		select {
		case c.msgs <- received{m, err}:
		case <-c.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// send writes one message.
func (c *conn) send(m proto.Msg) error { return proto.Write(c.uc, m) }

// close closes the connection (ending the request or lease as far as this
// process is concerned) and waits for the reader goroutine.
func (c *conn) close() {
	c.once.Do(func() {
		close(c.stop)
		c.uc.Close()
		c.wg.Wait()
	})
}

// keepOnExec lets the connection through an exec as descriptor
// heldLeaseFD (5), as a held child hands it to the job: the job run in
// place keeps the lease. What this process had at 5 is replaced: the
// reservation made at start, or a descriptor it inherited (see leaseSlot).
func (c *conn) keepOnExec() error {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(s uintptr) {
		if s == heldLeaseFD {
			_, ferr = unix.FcntlInt(s, unix.F_SETFD, 0)
			return
		}
		ferr = unix.Dup3(int(s), heldLeaseFD, 0)
	}); err != nil {
		return err
	}
	return ferr
}

// dupFile returns a new descriptor for the connection, close-on-exec in this
// process, for handing to a child as its lease.
func (c *conn) dupFile() (*os.File, error) {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = dupCloexec(int(s))
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup daemon connection: %w", derr)
	}
	return os.NewFile(uintptr(fd), "perflock-lease"), nil
}
