package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The case: perflockd's folder (a 64 KiB tmpfs) fills up while an
// exclusive job runs and a pls job is frozen; perflockd is killed and
// restarted. The new one used to exit 69 (it could not write its ticket
// mark) and the pls job stayed frozen for good. Now it warns, adopts both
// jobs, serves, and thaws the pls job when the exclusive one ends.
func TestRestartOnAFullRunDirectoryServesAndThaws(t *testing.T) {
	if !cgroupfsAvailable() {
		t.Skip("needs root and a writable cgroup2 tree (the cgroupfs driver)")
	}
	e := newEnv(t, "", "")
	run := filepath.Join(e.dir, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", run, "tmpfs", 0, "size=64k,mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(run, unix.MNT_DETACH) })
	e.sock = filepath.Join(run, "perflock.sock")
	e.startDaemon("cgroupfs", "freeze")

	counter := filepath.Join(e.dir, "count")
	p := e.job("pls", "P", nil, envCount+"="+counter)
	e.started("P")
	x := e.job("perfrun", "X", nil)
	e.started("X")
	e.waitQueue("P:frozen X:running")
	fillFolder(t, run)

	e.restartDaemon()
	e.waitQueue("P:frozen X:running")
	if log := e.dlog.String(); !strings.Contains(log, "serving without saving the ticket mark or rejoin key") {
		t.Errorf("the restarted daemon does not say it cannot save its state:\n%s", log)
	}
	e.finish("X", 0)
	if code := e.exit(x); code != 0 {
		t.Fatalf("perfrun X: exit %d: %s", code, x.stderr)
	}
	e.waitQueue("P:running")
	read := func() string { b, _ := os.ReadFile(counter); return string(b) }
	before := read()
	e.waitFor("the thawed pls job to count on", func() bool { return read() != before })
	if q := e.start("perfrun", []string{"--socket", e.sock, "--", "true"}); e.exit(q) != 0 {
		t.Fatalf("perfrun after the restart: exit %d: %s", q.code, q.stderr)
	}
	e.finish("P", 0)
	e.exit(p)
}

// fillFolder writes a file into dir until its filesystem is full.
func fillFolder(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "fill"))
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
			return
		}
	}
}
