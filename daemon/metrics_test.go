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

// A scrape waits for the loop only so long: a wedged loop (here, none
// running at all) costs the scraper an error, not a hang.
func TestStatsAreBoundedWhenTheLoopDoesNotAnswer(t *testing.T) {
	old := statsTimeout
	statsTimeout = 50 * time.Millisecond
	defer func() { statsTimeout = old }()
	s := newServer(Config{}, noneDriver{}, lockq.Drain)
	s.ctx, s.stop = context.WithCancel(context.Background())
	defer s.stop()
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
	s := newServer(Config{}, noneDriver{}, lockq.Freeze)
	s.ctx, s.stop = context.WithCancel(context.Background())
	defer s.stop()
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
	machine := []string{lockq.Machine}
	done := make(chan error, 1)
	s.post(func() {
		p, _, err := s.q.Enqueue(lockq.Request{Mode: lockq.SharedMode(), Resources: machine, Preemptible: true})
		if err == nil {
			_, _, err = s.q.Enqueue(lockq.Request{Mode: lockq.ExclusiveMode(), Resources: machine})
		}
		if err == nil {
			_, err = s.q.Suspended(p) // the freeze is confirmed: the exclusive one runs
		}
		if err == nil {
			_, _, err = s.q.Enqueue(lockq.Request{Mode: lockq.GroupMode(3), Resources: machine})
		}
		done <- err
	})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
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
