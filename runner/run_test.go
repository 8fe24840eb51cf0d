package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/perflock/perflock/daemon"
	"github.com/perflock/perflock/proto"
)

// startDaemon runs a daemon in this process on a socket in a fresh
// directory, driver none, until the test ends.
func startTestDaemon(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), SocketName)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Config{Socket: sock, Driver: "none", OnReady: func() { close(ready) }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("daemon did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon not ready after 10s")
	}
	return sock
}

// runJob runs argv with Run and returns its status and what it printed on
// stderr.
func runJob(t *testing.T, o Options, argv ...string) (int, string) {
	t.Helper()
	errf, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	if o.Program == "" {
		o.Program = "perfrun"
	}
	if o.Mode == "" {
		o.Mode = "exclusive"
	}
	o.Stderr = errf
	code := Run(context.Background(), o, argv)
	b, err := os.ReadFile(errf.Name())
	if err != nil {
		t.Fatal(err)
	}
	return code, string(b)
}

func TestRunPassesTheJobsExitStatus(t *testing.T) {
	sock := startTestDaemon(t)
	for _, c := range []struct {
		argv []string
		want int
	}{
		{[]string{"true"}, 0},
		{[]string{"sh", "-c", "exit 7"}, 7},
		{[]string{"sh", "-c", "kill -TERM $$"}, ExitSignal(syscall.SIGTERM)},
	} {
		if got, stderr := runJob(t, Options{Socket: sock, ConflictExit: ExitConflict}, c.argv...); got != c.want {
			t.Errorf("%q: status %d, want %d; stderr %q", c.argv, got, c.want, stderr)
		}
	}
}

func TestRunFailsFastOnMissingCommand(t *testing.T) {
	// No daemon at all: the typo is reported before any connection.
	sock := filepath.Join(t.TempDir(), SocketName)
	code, stderr := runJob(t, Options{Socket: sock}, "perflock-no-such-command")
	if code != ExitNotFound || !strings.Contains(stderr, "command not found") {
		t.Fatalf("status %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Fatal("a daemon was started for a command that does not exist")
	}
}

func TestRunNonblockWhileHeldExitsWithConflictCode(t *testing.T) {
	sock := startTestDaemon(t)
	holder := holdLock(t, sock)
	defer holder()
	code, stderr := runJob(t, Options{Socket: sock, Nonblock: true, ConflictExit: 42}, "true")
	if code != 42 || !strings.Contains(stderr, "busy") || !strings.Contains(stderr, "held by") {
		t.Fatalf("status %d, stderr %q", code, stderr)
	}
	code, stderr = runJob(t, Options{Socket: sock, Nonblock: true, Quiet: true, ConflictExit: ExitConflict}, "true")
	if code != ExitConflict || stderr != "" {
		t.Fatalf("quiet: status %d, stderr %q", code, stderr)
	}
}

func TestRunTimeoutWhileHeldExitsWithConflictCode(t *testing.T) {
	sock := startTestDaemon(t)
	holder := holdLock(t, sock)
	defer holder()
	start := time.Now()
	code, stderr := runJob(t, Options{Socket: sock, Timeout: 200 * time.Millisecond, ConflictExit: ExitConflict}, "true")
	if code != ExitConflict || !strings.Contains(stderr, "timed out after 200ms") || !strings.Contains(stderr, "waiting for the machine") {
		t.Fatalf("status %d, stderr %q", code, stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestRunWithoutReachableSystemDaemonExitsUnavailable(t *testing.T) {
	isolate(t)
	code, stderr := runJob(t, Options{Socket: SystemSocket}, "true")
	if code != ExitUnavailable || !strings.Contains(stderr, "system perflockd") {
		t.Fatalf("status %d, stderr %q", code, stderr)
	}
}

// holdLock takes the machine exclusively through a raw connection and
// returns a function that lets it go.
func holdLock(t *testing.T, sock string) func() {
	t.Helper()
	c, err := dial(context.Background(), Socket{Path: sock}, dialOpts{client: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.send(proto.Msg{Type: proto.TAcquire, Mode: "exclusive", Command: []string{"hold"}}); err != nil {
		t.Fatal(err)
	}
	if r := <-c.msgs; r.err != nil || r.msg.Type != proto.TGranted {
		t.Fatalf("hold: %+v", r)
	}
	return c.close
}

func TestListShowsHolder(t *testing.T) {
	sock := startTestDaemon(t)
	entries, err := List(context.Background(), sock, nil)
	if err != nil || entries == nil || len(entries) != 0 {
		t.Fatalf("empty queue: %v, %v", entries, err)
	}
	release := holdLock(t, sock)
	defer release()
	entries, err = List(context.Background(), sock, nil)
	if err != nil || len(entries) != 1 || entries[0].Command[0] != "hold" || entries[0].PID != os.Getpid() {
		t.Fatalf("%+v, %v", entries, err)
	}
}

func TestTwoClientsAutostartOneDaemon(t *testing.T) {
	sock := Socket{Path: filepath.Join(t.TempDir(), SocketName), PerUser: true}
	var wg sync.WaitGroup
	pids := make([]int, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			c, err := dial(context.Background(), sock, dialOpts{client: "test"})
			if err != nil {
				errs[i] = err
				return
			}
			pids[i] = c.hello.PID
			c.close()
		})
	}
	wg.Wait()
	// Stop the daemon and wait for it to go: it writes its state beside the
	// socket as it stops, and the test's directory is removed after.
	defer func() {
		for _, pid := range pids {
			if pid <= 0 || syscall.Kill(pid, syscall.SIGTERM) != nil {
				continue
			}
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || strings.Contains(string(b), ") Z ") {
					break // gone, or a zombie of ours: it has stopped
				}
			}
		}
	}()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("dial: %v, %v", errs[0], errs[1])
	}
	if pids[0] != pids[1] || pids[0] == 0 {
		t.Fatalf("daemons %d and %d, want one", pids[0], pids[1])
	}
	if _, err := os.Stat(sock.LogPath()); err != nil {
		t.Errorf("no daemon log: %v", err)
	}
}

// The default --key is stable, 16 hex digits, and tells word boundaries apart.
func TestCommandKey(t *testing.T) {
	k := CommandKey([]string{"make", "bench"})
	if len(k) != 16 || k != CommandKey([]string{"make", "bench"}) {
		t.Fatalf("CommandKey = %q", k)
	}
	if k == CommandKey([]string{"make bench"}) {
		t.Error("argv joined by NUL: [make bench] and [\"make bench\"] must differ")
	}
	if err := proto.ValidName(k); err != nil {
		t.Errorf("the key is not a valid name: %v", err)
	}
}

// A job's environment names its job once: an outer job's PERFLOCK_JOB is
// replaced, not shadowed (the first of two would win).
func TestJobEnvNamesTheJobOnce(t *testing.T) {
	t.Setenv(EnvJob, "x-1")
	n := 0
	for _, kv := range jobEnv("x-2") {
		if strings.HasPrefix(kv, EnvJob+"=") {
			n++
			if kv != EnvJob+"=x-2" {
				t.Errorf("%s, want %s=x-2", kv, EnvJob)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d %s entries, want 1", n, EnvJob)
	}
}
