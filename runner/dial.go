package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/perflock/perflock/proto"
)

// DaemonArg0 is the name under which a perflock binary runs the daemon;
// an autostarted daemon is the running binary re-executed under this name.
const DaemonArg0 = "perflockd"

// Autostart parameters.
const (
	autostartWait     = 5 * time.Second  // how long to retry connecting after starting a daemon
	autostartIdleExit = "60s"            // --idle-exit of an autostarted daemon
	handshakeTimeout  = 10 * time.Second // for the daemon's hello
)

// conn is one conversation with the daemon: a hello, then one request.
// Messages arrive on msgs from a reader goroutine that close waits for.
type conn struct {
	uc    *net.UnixConn
	hello proto.Msg // the daemon's hello

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

// dial connects to the daemon at sock and does the handshake, starting a
// daemon first when sock is the per-user default socket (sock.PerUser) and
// nothing listens there. Failures wrap ErrUnavailable (or ErrVersion) with
// a message that says what to do.
func dial(ctx context.Context, sock Socket, client string) (*conn, error) {
	return dialStart(ctx, sock, client, true)
}

// dialStart is dial; start says whether to start a daemon when none
// listens (only ever on the per-user socket).
func dialStart(ctx context.Context, sock Socket, client string, start bool) (*conn, error) {
	uc, err := connect(ctx, sock.Path)
	if err != nil && start && sock.PerUser && noListener(err) {
		uc, err = autostart(ctx, sock)
	}
	if err != nil {
		return nil, unavailable(sock, err)
	}
	c := &conn{uc: uc}
	if err := c.handshake(client); err != nil {
		uc.Close()
		if errors.Is(err, ErrVersion) {
			return nil, err
		}
		return nil, unavailable(sock, err)
	}
	c.msgs = make(chan received)
	c.stop = make(chan struct{})
	c.wg.Add(1)
	go c.readLoop(proto.NewReader(uc))
	return c, nil
}

func connect(ctx context.Context, path string) (*net.UnixConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	return nc.(*net.UnixConn), nil
}

// noListener reports whether a connect error means that no daemon listens.
func noListener(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

// unavailable wraps a failure to reach the daemon at sock in
// ErrUnavailable, with what to do about it.
func unavailable(sock Socket, err error) error {
	switch {
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
// the daemon's single-instance lock lets one of them serve, and both clients
// connect to it.
func autostart(ctx context.Context, sock Socket) (*net.UnixConn, error) {
	if err := startDaemon(sock); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(autostartWait)
	backoff := 10 * time.Millisecond
	for {
		uc, err := connect(ctx, sock.Path)
		if err == nil || !noListener(err) || time.Now().After(deadline) {
			if err != nil && noListener(err) {
				err = fmt.Errorf("started a daemon but it did not listen within %v (%v)", autostartWait, err)
			}
			return uc, err
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

// startDaemon re-executes the running binary as "perflockd --socket PATH
// --idle-exit 60s" in a new session, with stdin from /dev/null and output
// appended to the log next to the socket. It does not wait for it.
func startDaemon(sock Socket) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable to start perflockd: %w", err)
	}
	if fi, err := os.Stat(filepath.Dir(sock.Path)); err != nil || !fi.IsDir() {
		return fmt.Errorf("socket directory %s does not exist", filepath.Dir(sock.Path))
	}
	logf, err := os.OpenFile(sock.LogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open daemon log: %w", err)
	}
	defer logf.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer null.Close()
	cmd := &exec.Cmd{
		Path:        self,
		Args:        []string{DaemonArg0, "--socket", sock.Path, "--idle-exit", autostartIdleExit},
		Dir:         "/",
		Stdin:       null,
		Stdout:      logf,
		Stderr:      logf,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start perflockd: %w", err)
	}
	return cmd.Process.Release()
}

// handshake sends hello and reads the daemon's.
func (c *conn) handshake(client string) error {
	if err := c.uc.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return err
	}
	if err := proto.Write(c.uc, proto.Msg{Type: proto.THello, Version: proto.Version, Client: client}); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	// A reader used for the hello only: the daemon sends nothing more before
	// our request, so no buffered bytes are lost when readLoop takes over.
	m, err := readOne(c.uc)
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	switch m.Type {
	case proto.THello:
	case proto.TError:
		if m.Code == proto.CodeVersion {
			return fmt.Errorf("%w: %s (this client speaks version %d; upgrade perflock or restart perflockd)", ErrVersion, m.Message, proto.Version)
		}
		return fmt.Errorf("%w: %s: %s", ErrDaemon, m.Code, m.Message)
	default:
		return fmt.Errorf("expected hello, got %s", m.Type)
	}
	c.hello = m
	return c.uc.SetDeadline(time.Time{})
}

// readOne reads exactly one line from r, byte by byte, so that nothing
// after it is consumed.
func readOne(r io.Reader) (proto.Msg, error) {
	var line []byte
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			line = append(line, b[0])
			if b[0] == '\n' {
				return proto.Decode(line)
			}
			if len(line) >= proto.MaxMessage {
				return proto.Msg{}, proto.ErrTooLong
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return proto.Msg{}, err
		}
	}
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
