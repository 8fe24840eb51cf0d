package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// smallTmpfs mounts a 64 KiB tmpfs, read-only or not, on a fresh folder,
// unmounted at cleanup; it skips where mounting is not allowed.
func smallTmpfs(t *testing.T, readOnly bool) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	var flags uintptr
	if readOnly {
		flags = unix.MS_RDONLY
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, "size=64k,mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fill writes a file into dir until dir's filesystem is full; removing it
// makes room again.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "fill")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1024)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	// Room for no file at all, however small.
	probe := filepath.Join(dir, "probe")
	err = os.WriteFile(probe, []byte("x"), 0o600)
	os.Remove(probe)
	if err == nil {
		t.Fatal("a file could still be written after filling the folder")
	}
	return path
}

// logBuffer is a logger that logs to the test and keeps what it logged.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	t  *testing.T
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogBuffer(t *testing.T) (*slog.Logger, *logBuffer) {
	l := &logBuffer{t: t}
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})), l
}

// waitLogged waits until the log says want.
func waitLogged(t *testing.T, l *logBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(l.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's log never said %q", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serveUntilStopped runs a daemon; stop stops it and waits until Run
// would have returned (the state saved). It fails the test if the daemon
// does not start.
func serveUntilStopped(t *testing.T, cfg Config) (s *server, stop func()) {
	t.Helper()
	if cfg.Driver == "" {
		cfg.Driver = "none"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := open(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("the daemon did not start: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- s.serve() }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("the daemon stopped with %v", err)
		}
	})
	t.Cleanup(stop)
	return s, stop
}

// A full state folder does not keep a restarted daemon from serving (it
// used to exit 69: "cannot write tickets", and frozen pls jobs stayed
// frozen): it says what it cannot save and what that costs, serves, keeps
// the history in memory, and saves it all once there is room again.
func TestRestartedDaemonServesWithAFullStateDirectory(t *testing.T) {
	dir := smallTmpfs(t, false)
	old := stateRetry
	stateRetry = 50 * time.Millisecond
	defer func() { stateRetry = old }()
	sock := filepath.Join(dir, "s")
	_, stop1 := serveUntilStopped(t, Config{Socket: sock})
	completeKeyed(t, sock, "before")
	deadline := time.Now().Add(10 * time.Second)
	for b, _ := os.ReadFile(filepath.Join(dir, historyFile)); !strings.Contains(string(b), "before"); b, _ = os.ReadFile(filepath.Join(dir, historyFile)) {
		if time.Now().After(deadline) {
			t.Fatal("the history was not saved")
		}
		time.Sleep(10 * time.Millisecond)
	}
	filler := fill(t, dir)
	stop1() // cannot save its state at the stop: says so

	log, logged := newLogBuffer(t)
	s, stop := serveUntilStopped(t, Config{Socket: sock, Logger: log})
	if err := runExclusive(sock, 10*time.Second); err != nil {
		t.Fatalf("a client was not served: %v", err)
	}
	completeKeyed(t, sock, "during")
	waitRecorded(t, s, "during")
	var before bool
	inLoop(s, func() { _, before = s.history.lastSuccess(uint32(os.Geteuid()), "before") })
	if !before {
		t.Error("the history saved before the folder filled up was lost")
	}
	waitLogged(t, logged, "serving without saving the ticket mark or rejoin key")
	waitLogged(t, logged, "cannot save the history of keyed jobs")
	if !strings.Contains(logged.String(), "clients waiting then cannot rejoin their place") {
		t.Error("the log does not say what an unsaved ticket mark costs")
	}

	// Room again: saved at the next try.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitLogged(t, logged, "saved the ticket mark and rejoin key again")
	waitLogged(t, logged, "saved the history of keyed jobs again")
	stop()
	h := loadHistory(dir, testLogger(t))
	if _, ok := h.lastSuccess(uint32(os.Geteuid()), "during"); !ok {
		t.Error("the completion made while the folder was full was not saved")
	}
}

// A read-only run and state folder: the daemon serves from memory, saying
// what it cannot save (it used to refuse to start: it could not write its
// key).
func TestDaemonServesWithAReadOnlyStateDirectory(t *testing.T) {
	ro := smallTmpfs(t, true)
	log, logged := newLogBuffer(t)
	s, _ := serveUntilStopped(t, Config{Socket: filepath.Join(t.TempDir(), "s"), RunDir: ro, StateDir: filepath.Join(ro, "state"), Logger: log})
	sock := s.cfg.Socket
	if err := runExclusive(sock, 10*time.Second); err != nil {
		t.Fatalf("a client was not served: %v", err)
	}
	completeKeyed(t, sock, "k")
	waitRecorded(t, s, "k")
	for _, want := range []string{"serving without saving the ticket mark or rejoin key", "cannot make the state directory"} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("the log does not say %q", want)
		}
	}
}
