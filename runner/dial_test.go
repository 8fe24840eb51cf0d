package runner

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/proto"
)

// fullListener listens on path with room for one pending connection
// (backlog 0) and fills it, so that connect(2) fails with EAGAIN, as when
// connections arrive faster than a daemon accepts them. Nothing is
// accepted until the test does. It returns the listener and the
// connections that fill it; the test's end closes both.
func fullListener(t *testing.T, path string) (*net.UnixListener, []net.Conn) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fl, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	ln := fl.(*net.UnixListener)
	t.Cleanup(func() { ln.Close() })
	var fill []net.Conn
	for {
		c, err := net.Dial("unix", path)
		if errors.Is(err, syscall.EAGAIN) {
			return ln, fill
		}
		if err != nil || len(fill) > 64 {
			t.Fatalf("filling the listen queue: %d connections, then %v", len(fill), err)
		}
		t.Cleanup(func() { c.Close() })
		fill = append(fill, c)
	}
}

// shorten sets *v to d for the test.
func shorten(t *testing.T, v *time.Duration, d time.Duration) {
	old := *v
	*v = d
	t.Cleanup(func() { *v = old })
}

func TestDialWaitsForAFullListenQueue(t *testing.T) {
	shorten(t, &connectNoticeAfter, 50*time.Millisecond)
	sock := Socket{Path: filepath.Join(t.TempDir(), SocketName), NamedBy: "--socket"}
	ln, fill := fullListener(t, sock.Path)
	told := make(chan string, 1)
	type result struct {
		c   *conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := dial(context.Background(), sock, dialOpts{client: "test", waiting: func(m string) { told <- m }})
		done <- result{c, err}
	}()
	select {
	case m := <-told:
		if !strings.Contains(m, "waiting to connect") || !strings.Contains(m, sock.Path) {
			t.Errorf("notice %q", m)
		}
	case r := <-done:
		t.Fatalf("dial returned before accepting began: %v", r.err)
	}
	// Accept: the connections that filled the queue (they say nothing, and
	// are let go after a while), then the client's, which says hello.
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		for _, c := range fill {
			c.Close()
		}
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if m, err := proto.NewReader(c).Read(); err == nil && m.Type == proto.THello {
					proto.Write(c, proto.Msg{Type: proto.THello, Version: proto.Version, PID: 42})
				}
			})
		}
	})
	r := <-done
	if r.err != nil {
		t.Fatalf("dial once accepting: %v", r.err)
	}
	defer r.c.close()
	if r.c.hello.PID != 42 {
		t.Fatalf("hello %+v", r.c.hello)
	}
}

func TestDialGivesUpOnAListenQueueThatStaysFull(t *testing.T) {
	shorten(t, &connectFor, 300*time.Millisecond)
	for _, sock := range []Socket{
		{Path: filepath.Join(t.TempDir(), SocketName), PerUser: true},
		{Path: filepath.Join(t.TempDir(), SocketName), NamedBy: EnvSocket},
	} {
		fullListener(t, sock.Path)
		start := time.Now()
		_, err := dial(context.Background(), sock, dialOpts{client: "test"})
		if !errors.Is(err, ErrOverloaded) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%+v: got %v, want ErrOverloaded and ErrUnavailable", sock, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "perflockd at "+sock.Path+" is overloaded") ||
			!strings.Contains(msg, "try again later") || strings.Contains(msg, "by hand") {
			t.Errorf("%+v: message %q", sock, msg)
		}
		if d := time.Since(start); d < connectFor {
			t.Errorf("%+v: gave up after %v, before connectFor (%v)", sock, d, connectFor)
		}
	}
}

// The daemon answers a connection over its limit with an error and closes
// it, often before the client's hello goes out: the hello's write fails
// (EPIPE), and the client must report what the daemon said.
func TestHandshakeReportsARefusalThatCameBeforeTheHello(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	daemonEnd := os.NewFile(uintptr(fds[1]), "daemon")
	proto.Write(daemonEnd, proto.Msg{Type: proto.TError, Code: proto.CodeLimit,
		Message: "perflockd has too many connections (4096 open, 3 of this user): try again later"})
	daemonEnd.Close()
	f := os.NewFile(uintptr(fds[0]), "client")
	defer f.Close()
	fc, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{uc: fc.(*net.UnixConn)}
	defer c.uc.Close()
	err = c.handshake("test", nil)
	if !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "too many connections (4096 open") ||
		strings.Contains(err.Error(), "broken pipe") {
		t.Fatalf("handshake after a refusal: %v", err)
	}
	err = unavailable(Socket{Path: "/somewhere/x.sock", System: true}, err)
	if want := "perflockd at /somewhere/x.sock refused the connection: perflockd has too many connections"; !strings.Contains(err.Error(), want) ||
		strings.Contains(err.Error(), "administrator") {
		t.Fatalf("reported as %q, want it to contain %q", err, want)
	}
}
