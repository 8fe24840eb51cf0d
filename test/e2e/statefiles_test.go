package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// asSecondUser runs a shell command as secondUser in dir and waits for it.
func (e *env) asSecondUser(dir, script string) {
	e.t.Helper()
	p := e.startPath("setpriv", []string{"--reuid", secondUser, "--regid", secondUser, "--clear-groups", "--",
		"sh", "-c", "cd " + dir + " && " + script})
	if code := e.exit(p); code != 0 {
		e.t.Fatalf("as %s: %s: exit %d: %s", secondUser, script, code, p.stderr)
	}
}

func fileOwner(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// A root perflockd whose socket is in a sticky folder anyone may write to
// (like /tmp) does not believe what another user put there before it
// started: a rejoin key (tokens could be forged with it), a lock file held
// locked (it used to exit 0, "another perflockd already serves"), a history
// that cannot be parsed (it used to exit 69). It replaces the key and the
// lock with its own, moves the history aside, and serves.
func TestPlantedStateFilesInAStickySocketDirectoryAreNotBelieved(t *testing.T) {
	requireSecondUser(t)
	e := newEnv(t, "", "")
	if err := os.Chmod(e.dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	const planted = "0123456789abcdef0123456789abcdef"
	e.asSecondUser(e.dir, "printf "+planted+" > key && echo garbage > history.json && : > perflock.sock.lock")
	// Held locked, as the other user's process would (the daemon sees the
	// same: a lock it cannot take, in a file not its own).
	held, err := os.Open(e.sock + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := unix.Flock(int(held.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	e.startDaemon("none", "drain")
	if p := e.start("perfrun", []string{"--socket", e.sock, "--", "true"}); e.exit(p) != 0 {
		t.Fatalf("perfrun: exit %d: %s", p.code, p.stderr)
	}
	for _, f := range []string{"key", "perflock.sock.lock"} {
		if uid := fileOwner(t, filepath.Join(e.dir, f)); uid != 0 {
			t.Errorf("%s belongs to uid %d, want root's own", f, uid)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "key")); string(b) == planted {
		t.Error("the daemon kept the planted key")
	}
	if aside, _ := filepath.Glob(filepath.Join(e.dir, "history.json.bad-*")); len(aside) != 1 {
		t.Errorf("history moved aside: %v, want one history.json.bad-TIME", aside)
	}
	log := e.dlog.String()
	for _, want := range []string{"removed a lock file that was not perflockd's own", "not using a rejoin key that is not perflockd's own", "moved the history of keyed jobs aside"} {
		if !strings.Contains(log, want) {
			t.Errorf("the daemon's log does not say %q:\n%s", want, log)
		}
	}
}

// A daemon that may not remove a lock file not its own (a user's, in a
// sticky folder, the file root's) refuses to start, saying why and what to
// do, with exit 69.
func TestLockFileAUserDaemonCannotReplaceIsRefusedClearly(t *testing.T) {
	requireSecondUser(t)
	e := newEnv(t, "", "")
	if err := os.Chmod(e.dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.sock+".lock", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := e.startPath("setpriv", []string{"--reuid", secondUser, "--regid", secondUser, "--clear-groups", "--",
		filepath.Join(binDir, "perflockd"), "--socket", e.sock, "--driver", "none"})
	code := e.exit(p)
	if msg := p.stderr.String(); code != 69 || !strings.Contains(msg, "is not perflockd's own") || !strings.Contains(msg, "have root remove it") {
		t.Errorf("perflockd as %s: exit %d, stderr %q; want 69, saying the lock file is not its own and what to do", secondUser, code, msg)
	}
}
