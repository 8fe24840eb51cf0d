package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/lockq"
)

func TestMetricsAddr(t *testing.T) {
	for addr, want := range map[string]string{
		"unix:/run/perflock/m.sock": "unix /run/perflock/m.sock",
		"127.0.0.1:9101":            "tcp 127.0.0.1:9101",
		"127.0.0.2:0":               "tcp 127.0.0.2:0",
		"[::1]:9101":                "tcp [::1]:9101",
		"localhost:9101":            "tcp 127.0.0.1:9101",
	} {
		n, a, err := parseMetricsAddr(addr)
		if err != nil || n+" "+a != want {
			t.Errorf("%s: %s %s, %v; want %s", addr, n, a, err, want)
		}
	}
	for addr, want := range map[string]string{
		"0.0.0.0:9101":     "not a loopback address",
		":9101":            "every interface is not a loopback address",
		"[::]:9101":        "not a loopback address",
		"10.1.2.3:9101":    "reverse proxy",
		"example.org:9101": "not a loopback address",
		"unix:":            "needs a path",
		"9101":             "want unix:PATH",
		"127.0.0.1:99999":  "not a number",
	} {
		_, _, err := parseMetricsAddr(addr)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want ErrConfig saying %q", addr, err, want)
		}
	}
}

// The metrics socket is made like the daemon's: a stale one is replaced, a
// live one or a symlink is refused.
func TestMetricsUnixSocketIsMadeSafely(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.sock")

	// A stale socket: its listener is gone.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err := listenMetrics("unix", path, 0o640)
	if err != nil {
		t.Fatalf("replacing a stale socket: %v", err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("metrics socket: %v, %v; want mode 0640", fi, err)
	}
	// A live one is someone else's.
	if _, err := listenMetrics("unix", path, 0o640); err == nil || !strings.Contains(err.Error(), "another process serves") {
		t.Fatalf("over a live socket: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("closing left the socket: %v", err)
	}
	// A symlink, even to a socket, is refused and left alone.
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Symlink(target, path)
	if _, err := listenMetrics("unix", path, 0o640); !errors.Is(err, ErrConfig) {
		t.Fatalf("over a symlink: %v", err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was touched: %v, %v", fi, err)
	}
	// A directory others may write to is refused, as for the main socket.
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if _, err := listenMetrics("unix", filepath.Join(open, "m.sock"), 0o666); !errors.Is(err, ErrConfig) {
		t.Fatalf("in a world-writable directory: %v", err)
	}
}

// idleServer is a server with no loop running: tests run one as they need.
func idleServer(t *testing.T, drv Driver, policy lockq.Policy) *server {
	t.Helper()
	st, err := loadRunState(t.TempDir(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(context.Background(), Config{Policy: policy, MaxWaiting: 10, Logger: testLogger(t)}, drv, st, nil, savedWaiters{})
	t.Cleanup(s.stop)
	return s
}

// A scrape waits for the loop only so long: a wedged loop (here, none
// running at all) costs the scraper an error, not a hang.
func TestStatsAreBoundedWhenTheLoopDoesNotAnswer(t *testing.T) {
	old := statsTimeout
	statsTimeout = 50 * time.Millisecond
	defer func() { statsTimeout = old }()
	s := idleServer(t, noneDriver{}, lockq.Drain)
	for range cap(s.events) { // the loop's inbox is full
		s.events <- func() {}
	}
	if _, err := s.stats(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stats with a full inbox: %v", err)
	}
	<-s.events // room for one: posted, never run
	if _, err := s.stats(context.Background()); err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("stats with no loop: %v", err)
	}
	s.stop()
	if _, err := s.stats(context.Background()); err == nil {
		t.Fatal("stats of a stopped daemon succeeded")
	}
}

// Stats counts the queue by mode and state, read through the loop.
func TestStatsCountTheQueue(t *testing.T) {
	s := idleServer(t, &orderDriver{}, lockq.Freeze)
	go func() { // the loop
		for {
			select {
			case f := <-s.events:
				f()
			case <-s.ctx.Done():
				return
			}
		}
	}()
	done := make(chan struct{})
	s.post(func() {
		defer close(done)
		now := s.now()
		c := s.core
		c.Step(core.Adopt{Now: now})
		c.Step(core.FreezerDone{Now: now})
		c.Step(core.Acquire{Conn: 1, UID: 1, Mode: "shared", Preemptible: true, Command: []string{"a"}, Now: now})
		c.Step(core.Acquire{Conn: 2, UID: 1, Mode: "exclusive", Command: []string{"b"}, Now: now})
		c.Step(core.FreezerDone{Now: now}) // the freeze is confirmed: the exclusive one runs
		c.Step(core.Acquire{Conn: 3, UID: 1, Mode: "group(3)", Command: []string{"c"}, Now: now})
	})
	<-done
	st, err := s.stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var want Stats
	want.Requests[lockq.Shared][StateFrozen] = 1
	want.Requests[lockq.Exclusive][StateRunning] = 1
	want.Requests[lockq.Group][StateWaiting] = 1
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
}
