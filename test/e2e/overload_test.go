package e2e

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/proto"
)

// A daemon that does not take a connection: its listen queue is full, or
// it refuses the connection at its limit.

// fullListener listens on path with a listen queue of one pending
// connection (backlog 0) and fills it: connect(2) to path then fails at
// once with EAGAIN, as when a flood of connections outpaces the daemon's
// accept loop. It returns the listening socket, never accepted from.
func fullListener(t *testing.T, path string) *os.File {
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
	ln := os.NewFile(uintptr(fd), path)
	t.Cleanup(func() { ln.Close() })
	for n := 0; ; n++ {
		c, err := net.Dial("unix", path)
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil || n > 64 {
			t.Fatalf("filling the listen queue: %d connections, then %v", n, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	return ln
}

// waitOutput waits until p's stderr contains want, failing if p exits
// first.
func (e *env) waitOutput(p *proc, want string) {
	e.t.Helper()
	e.waitFor("stderr to say "+strconv.Quote(want), func() bool {
		select {
		case <-p.done:
			e.t.Fatalf("%v exited %d before saying %q: %s", p.cmd.Args, p.code, want, p.stderr)
		default:
		}
		return strings.Contains(p.stderr.String(), want)
	})
}

// A daemon too busy to accept: its listen queue is full and connect(2)
// fails with EAGAIN. perfrun says it waits to connect, keeps trying, and
// runs its job once the daemon accepts.
func TestClientWaitsForAFullListenQueue(t *testing.T) {
	e := newEnv(t, "", "")
	ln := fullListener(t, e.sock)
	p := e.start("perfrun", []string{"--socket", e.sock, "--", "sh", "-c", "exit 3"})
	e.waitOutput(p, "waiting to connect")
	// Now a daemon serves the full socket (socket activation), accepting
	// the connections queued before perfrun's and then perfrun's own.
	d := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, filepath.Join(binDir, "perflockd"), "--driver", "none")
	d.ExtraFiles = []*os.File{ln}
	dlog := &syncBuffer{}
	d.Stdout, d.Stderr = dlog, dlog
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Process.Signal(syscall.SIGTERM)
		d.Wait()
		if t.Failed() {
			t.Logf("perflockd log:\n%s", dlog)
		}
	})
	if code := e.exit(p); code != 3 {
		t.Fatalf("perfrun once the daemon accepts: exit %d, want 3 (the job's): %s", code, p.stderr)
	}
}

// -t bounds the wait to connect to a daemon whose listen queue stays full
// as it bounds the wait in line: exit 75, saying the daemon is overloaded.
// (Without -t the client gives up after a while with 69: see runner's
// TestDialGivesUpOnAListenQueueThatStaysFull.)
func TestTimeoutBoundsTheWaitToConnect(t *testing.T) {
	e := newEnv(t, "", "")
	fullListener(t, e.sock)
	p := e.start("perfrun", []string{"--socket", e.sock, "-t", "1.5s", "--", "true"})
	if code := e.exit(p); code != 75 || !strings.Contains(p.stderr.String(), "timed out after 1.5s") ||
		!strings.Contains(p.stderr.String(), "overloaded") {
		t.Fatalf("-t 1.5s against a full listen queue: exit %d, want 75 and a timeout that names the overload: %s", code, p.stderr)
	}
}

// helloConn is a client connection that has said hello and heard the
// daemon's: the daemon counts it. A connection the daemon has not yet seen
// closed (the harness's probe) may still count against a limit of one:
// then it is refused, and helloConn tries again.
func (e *env) helloConn() net.Conn {
	t := e.t
	t.Helper()
	var hello net.Conn
	e.waitFor("the daemon to take a connection", func() bool {
		c, err := net.Dial("unix", e.sock)
		if err != nil {
			t.Fatal(err)
		}
		if err := proto.Write(c, proto.Msg{Type: proto.THello, Version: proto.Version, Client: "test"}); errors.Is(err, syscall.EPIPE) {
			c.Close() // refused before the hello went out
			return false
		} else if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := bufio.NewReader(c).ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		m, err := proto.Decode(line)
		switch {
		case err == nil && m.Type == proto.THello:
			hello = c
			return true
		case err == nil && m.Code == proto.CodeLimit:
			c.Close()
			return false
		}
		t.Fatalf("hello: %+v, %v", m, err)
		return false
	})
	t.Cleanup(func() { hello.Close() })
	return hello
}

// A connection over the daemon's limit is refused with a message the
// client passes on (exit 69), not as a broken pipe or a daemon to start.
func TestConnectionLimitRefusalSaysTooManyConnections(t *testing.T) {
	e := newEnvWith(t, "none", "freeze", "--max-conns-per-user", "1")
	e.helloConn()
	for _, prog := range []string{"wholock", "perfrun"} {
		args := []string{"--socket", e.sock}
		if prog == "perfrun" {
			args = append(args, "--", "true")
		}
		p := e.start(prog, args)
		out := p.stderr.String
		if code := e.exit(p); code != 69 || !strings.Contains(out(), "too many connections") ||
			!strings.Contains(out(), "try again later") || strings.Contains(out(), "broken pipe") || strings.Contains(out(), "by hand") {
			t.Errorf("%s over the connection limit: exit %d, want 69 and the daemon's refusal: %s", prog, code, out())
		}
	}
}
