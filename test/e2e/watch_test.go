package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perflock/perflock/proto"
	"github.com/perflock/perflock/runner"
)

// queueOf renders a listing like env.queue: "NAME:state ...".
func queueOf(es []proto.Entry) string {
	var b []string
	for _, x := range es {
		n := "?"
		if len(x.Command) > 0 {
			n = x.Command[len(x.Command)-1]
		}
		b = append(b, n+":"+x.State)
	}
	return strings.Join(b, " ")
}

// nextQueue reads queues from ch until one reads want.
func nextQueue(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	var seen []string
	for {
		select {
		case got, ok := <-ch:
			if !ok {
				t.Fatalf("the watch ended; saw %q, want %q", seen, want)
			}
			seen = append(seen, got)
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("saw %q, never %q", seen, want)
		}
	}
}

// runner.Watch against a real perflockd: it sees real pls and perfrun jobs
// queue, run, freeze and end, as they happen. When the daemon is gone it
// says so every second and does not start one; once a daemon serves again
// it is back.
func TestWatchFollowsRealJobsAndReconnects(t *testing.T) {
	driver := drivers()[0]
	e := newEnv(t, driver, "freeze")
	queues := make(chan string, 1000)
	lost := make(chan error, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runner.Watch(ctx, e.sock, nil, func(s runner.Snapshot) error {
			if s.Lost != nil {
				lost <- s.Lost
				return nil
			}
			if s.Driver != driver {
				t.Errorf("snapshot says driver %q, want %q", s.Driver, driver)
			}
			queues <- queueOf(s.Entries)
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch ended with %v, want context.Canceled", err)
		}
	})
	nextQueue(t, queues, "")

	p := e.job("pls", "P", nil)
	e.started("P")
	nextQueue(t, queues, "P:running")
	x := e.job("perfrun", "X", nil)
	e.started("X")
	if driver == "cgroupfs" {
		nextQueue(t, queues, "P:frozen X:running")
	} else {
		nextQueue(t, queues, "P:running X:running") // the none driver cannot freeze: drain
	}
	e.finish("X", 0)
	e.exit(x)
	nextQueue(t, queues, "P:running")
	e.finish("P", 0)
	e.exit(p)
	nextQueue(t, queues, "")

	// The daemon dies: Watch reports it, and again at each failed attempt,
	// without starting a daemon on the socket.
	e.daemon.Process.Signal(syscall.SIGKILL)
	e.daemon.Wait()
	for range 3 {
		select {
		case <-lost:
		case <-time.After(60 * time.Second):
			t.Fatal("Watch did not report the lost daemon")
		}
	}
	if c, err := net.Dial("unix", e.sock); err == nil {
		c.Close()
		t.Fatal("a daemon serves the socket: Watch started one while reconnecting")
	}
	e.runDaemon()
	nextQueue(t, queues, "")
	y := e.job("perfrun", "Y", nil)
	e.started("Y")
	nextQueue(t, queues, "Y:running")
	e.finish("Y", 0)
	e.exit(y)
}

// The real `wholock --watch --json`: one JSON array a line, a new one as
// jobs start and end; a daemon restart is told on stderr and the watch goes
// on; SIGINT ends it with status 0.
func TestWholockWatchJSONPrintsEachChange(t *testing.T) {
	e := newEnv(t, drivers()[0], "drain")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w := exec.Command(filepath.Join(binDir, "wholock"), "--socket", e.sock, "--watch", "--json")
	w.Stdout = pw
	stderr := &syncBuffer{}
	w.Stderr = stderr
	w.WaitDelay = time.Second
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = w.Wait(); close(exited) }()
	t.Cleanup(func() {
		w.Process.Kill()
		<-exited
	})
	queues := make(chan string, 1000)
	go func() {
		defer close(queues)
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var es []proto.Entry
			if err := json.Unmarshal(sc.Bytes(), &es); err != nil || es == nil {
				t.Errorf("a line that is not a JSON array: %q (%v)", sc.Text(), err)
				return
			}
			queues <- queueOf(es)
		}
	}()

	nextQueue(t, queues, "")
	a := e.job("pls", "A", nil)
	e.started("A")
	nextQueue(t, queues, "A:running")
	c := e.job("perfrun", "C", nil)
	nextQueue(t, queues, "A:running C:waiting")
	e.finish("A", 0)
	e.exit(a)
	e.started("C")
	nextQueue(t, queues, "C:running")

	// A restart: the running job is re-adopted (cgroupfs) or its lease is
	// the client's connection (none); either way the watch continues.
	e.restartDaemon()
	e.waitFor("wholock to say it reconnected", func() bool {
		return strings.Contains(stderr.String(), "reconnected to perflockd")
	})
	if !strings.Contains(stderr.String(), "wholock: lost perflockd") {
		t.Errorf("stderr %q does not tell of the lost daemon", stderr)
	}
	e.finish("C", 0)
	e.exit(c)
	nextQueue(t, queues, "")

	w.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
		if code := exitCode(waitErr); code != 0 {
			t.Fatalf("wholock --watch after SIGINT: exit %d, stderr %q", code, stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("wholock --watch did not end on SIGINT")
	}
	for range queues { // the rest of its output, to its end
	}
}

// --watch with --cancel is a usage error.
func TestWholockWatchWithCancelIsAUsageError(t *testing.T) {
	e := newEnv(t, "", "")
	p := e.start("wholock", []string{"--socket", e.sock, "--watch", "--cancel", "x-1"})
	if code := e.exit(p); code != runner.ExitUsage || !strings.Contains(p.stderr.String(), "--watch and --cancel") {
		t.Fatalf("exit %d, stderr %q; want 64 and a message", code, p.stderr)
	}
}
