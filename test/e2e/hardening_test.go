package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perflock/perflock/cgroup"
)

// secondUser is a real unprivileged user for permission tests, created when
// missing (the tests run as root).
const secondUser = "perflock-test"

func requireSecondUser(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create and act as a second user")
	}
	if err := ensureSecondUser(); err != nil {
		t.Skip(err)
	}
}

// ensureSecondUser creates secondUser unless it exists.
func ensureSecondUser() error {
	if _, err := exec.Command("id", secondUser).Output(); err == nil {
		return nil
	}
	if out, err := exec.Command("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", secondUser).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot create user %s: %v: %s", secondUser, err, out)
	}
	return nil
}

// openForOthers lets the second user reach the daemon's socket and the
// agents' socket.
func (e *env) openForOthers() {
	os.Chmod(e.dir, 0o755)
	os.Chmod(filepath.Join(e.dir, "agents"), 0o777)
}

// perflockd killed with SIGKILL and restarted while an exclusive job runs,
// a pls job is frozen and two requests wait: the running job keeps the
// machine, the pls job stays frozen, the waiters keep their order, and a new
// pls job waits behind them.
func TestRestartedDaemonReadoptsJobsAndKeepsTheOrder(t *testing.T) {
	if !cgroupfsAvailable() {
		t.Skip("needs root and a writable cgroup2 tree (the cgroupfs driver)")
	}
	e := newEnv(t, "cgroupfs", "freeze")
	counter := filepath.Join(e.dir, "count")
	p := e.job("pls", "P", nil, envCount+"="+counter)
	e.started("P")
	x := e.job("perfrun", "X", nil)
	e.started("X")
	a := e.job("perfrun", "A", []string{"-v"})
	e.waitQueue("P:frozen X:running A:waiting")
	b := e.job("perfrun", "B", []string{"-v"})
	e.waitQueue("P:frozen X:running A:waiting B:waiting")

	e.restartDaemon()
	// Adopted at once; A and B rejoin within the grace period.
	e.waitQueue("P:frozen X:running A:waiting B:waiting")
	mount, _ := cgroup.Mountpoint()
	events, _ := os.ReadFile(filepath.Join(mount, e.cgName, "shared", "cgroup.events"))
	if !strings.Contains(string(events), "frozen 1") {
		t.Fatalf("shared jobs thawed by the restart: %q", events)
	}
	read := func() string { b, _ := os.ReadFile(counter); return string(b) }
	before := read()
	q := e.job("pls", "Q", nil)
	e.waitQueue("P:frozen X:running A:waiting B:waiting Q:waiting")
	if read() != before {
		t.Fatal("the frozen pls job ran after the restart")
	}
	e.finish("X", 0)
	e.exit(x)
	e.started("A")
	e.waitQueue("P:frozen A:running B:waiting Q:waiting")
	e.finish("A", 0)
	e.exit(a)
	e.started("B")
	e.finish("B", 0)
	e.exit(b)
	e.started("Q")
	e.waitQueue("P:running Q:running")
	if !strings.Contains(a.stderr.String(), "rejoining with ticket") {
		t.Errorf("A did not say it rejoined: %q", a.stderr)
	}
	e.finish("P", 0)
	e.finish("Q", 0)
	e.exit(p)
	e.exit(q)
	e.waitQueue("")
}

// wholock --cancel: the owner cancels a waiting request, root stops another
// user's running job, another user may not cancel root's job.
func TestCancelIsForTheOwnerOrRoot(t *testing.T) {
	requireSecondUser(t)
	e := newEnv(t, drivers()[0], "freeze")
	e.openForOthers()
	x := e.job("perfrun", "X", nil)
	e.started("X")
	y := e.job("perfrun", "Y", nil)
	e.waitQueue("X:running Y:waiting")
	var xJob, yJob string
	for _, en := range e.list() {
		switch en.Command[len(en.Command)-1] {
		case "X":
			xJob = en.Job
		case "Y":
			yJob = en.Job
		}
	}
	// Another user may not cancel root's job.
	other := e.startPath("setpriv", []string{"--reuid", secondUser, "--regid", secondUser, "--clear-groups", "--",
		filepath.Join(binDir, "wholock"), "--socket", e.sock, "--cancel", xJob})
	if code := e.exit(other); code != 77 {
		t.Fatalf("another user's cancel: exit %d, want 77: %s", code, other.stderr)
	}
	e.waitQueue("X:running Y:waiting")
	// Unknown job.
	if code := e.exit(e.start("wholock", []string{"--socket", e.sock, "--cancel", "x-999"})); code != 1 {
		t.Fatalf("cancel of no job: exit %d, want 1", code)
	}
	// The owner cancels the waiting request: its perfrun gives up with 75.
	if code := e.exit(e.start("wholock", []string{"--socket", e.sock, "--cancel", yJob})); code != 0 {
		t.Fatalf("cancel %s: exit %d", yJob, code)
	}
	if code := e.exit(y); code != 75 || !strings.Contains(y.stderr.String(), "cancelled by root") {
		t.Fatalf("cancelled waiter: exit %d, stderr %q", code, y.stderr)
	}
	e.waitQueue("X:running")
	// A running job is stopped.
	if code := e.exit(e.start("wholock", []string{"--socket", e.sock, "--cancel", xJob})); code != 0 {
		t.Fatalf("cancel %s: exit %d", xJob, code)
	}
	if code := e.exit(x); code != 128+15 {
		t.Fatalf("cancelled running job: exit %d, want 143", code)
	}
	e.waitQueue("")
}

// A second user's pls job is placed, listed under that user, and frozen by
// root's perfrun like anyone's.
func TestSecondUsersJobsShareTheQueue(t *testing.T) {
	requireSecondUser(t)
	e := newEnv(t, drivers()[0], "freeze")
	e.openForOthers()
	p := e.jobAs(secondUser, "pls", "P", nil)
	e.started("P")
	es := e.list()
	if len(es) != 1 || es[0].User != secondUser || es[0].State != "running" {
		t.Fatalf("wholock: %+v", es)
	}
	e.finish("P", 0)
	if code := e.exit(p); code != 0 {
		t.Fatalf("pls as %s: exit %d: %s", secondUser, code, p.stderr)
	}
}

// A per-user socket directory that someone else owns, or that is a
// symlink, is refused with a message saying so.
func TestUnsafePerUserDirectoryIsRefused(t *testing.T) {
	requireSecondUser(t)
	e := newEnv(t, "", "")
	rootOwned := filepath.Join(e.dir, "rootowned")
	os.MkdirAll(filepath.Join(rootOwned, "perflock"), 0o700)
	os.Chmod(e.dir, 0o755)
	os.Chmod(rootOwned, 0o777)
	link := filepath.Join(e.dir, "link")
	os.MkdirAll(filepath.Join(link+"-target", "real"), 0o777)
	os.Chmod(link+"-target", 0o777)
	for _, xdg := range []string{rootOwned, link + "-target"} {
		if xdg == link+"-target" {
			os.Symlink(filepath.Join(link+"-target", "real"), filepath.Join(link+"-target", "perflock"))
		}
		p := e.startPath("setpriv", []string{"--reuid", secondUser, "--regid", secondUser, "--clear-groups", "--",
			filepath.Join(binDir, "perfrun"), "--", "true"}, "XDG_RUNTIME_DIR="+xdg, "PERFLOCK_SOCKET=")
		if code := e.exit(p); code != 69 || !strings.Contains(p.stderr.String(), "perflock") {
			t.Errorf("XDG_RUNTIME_DIR=%s: exit %d, stderr %q; want 69 and a message", xdg, code, p.stderr)
		}
	}
}

// A restarted daemon adopts a running job whole, from the record the earlier
// one kept: its group (a new member joins at once), its named resources,
// and its key (--replace of the same key stops it).
func TestRestartedDaemonKeepsGroupResourcesAndKey(t *testing.T) {
	if !cgroupfsAvailable() {
		t.Skip("needs root and a writable cgroup2 tree (the cgroupfs driver)")
	}
	e := newEnv(t, "cgroupfs", "freeze")
	a := e.job("perfrun", "A", []string{"--group", "7", "-L", "cpu", "-L", "net", "--key", "sync"})
	e.started("A")
	e.restartDaemon()
	e.waitQueue("A:running")
	es := e.list()
	if got := es[0]; got.Mode != "group(7)" || strings.Join(got.Resources, ",") != "cpu,net" || got.User != "root" {
		t.Fatalf("adopted job %+v: want group(7) on cpu,net of root", got)
	}
	b := e.job("perfrun", "B", []string{"--group", "7"})
	e.started("B") // joins the adopted group at once
	e.waitQueue("A:running B:running")
	n := e.job("perfrun", "N", []string{"-L", "net"})
	e.waitQueue("A:running B:running N:waiting") // net is still held
	e.finish("B", 0)
	if code := e.exit(b); code != 0 {
		t.Fatalf("B: exit %d: %s", code, b.stderr)
	}
	c := e.job("perfrun", "C", []string{"--key", "sync", "--replace"})
	if code := e.exit(a); code != 128+15 {
		t.Fatalf("A after --replace of its key: exit %d, want 143: %s", code, a.stderr)
	}
	e.started("N")
	e.finish("N", 0)
	e.exit(n)
	e.started("C")
	e.finish("C", 0)
	if code := e.exit(c); code != 0 {
		t.Fatalf("C: exit %d: %s", code, c.stderr)
	}
	e.waitQueue("")
	eventually(t, settleTime, "no job records left behind", func() (string, bool) {
		left, _ := filepath.Glob(filepath.Join(e.dir, "jobs", "*.json"))
		return fmt.Sprint(left), len(left) == 0
	})
}

// Two daemons never drive the same jobs: a second perflockd asked for the
// cgroup subtree another one uses is refused, and with --driver auto it
// makes do without cgroups rather than adopt, freeze or thaw the other's.
func TestSecondDaemonOnTheSameSubtreeIsRefused(t *testing.T) {
	if !cgroupfsAvailable() {
		t.Skip("needs root and a writable cgroup2 tree (the cgroupfs driver)")
	}
	e := newEnv(t, "cgroupfs", "freeze")
	p := e.job("pls", "P", nil)
	e.started("P")
	x := e.job("perfrun", "X", nil)
	e.started("X")
	e.waitQueue("P:frozen X:running")

	sock2 := filepath.Join(e.dir, "second.sock")
	second := func(ctx context.Context, driver string) *exec.Cmd {
		return exec.CommandContext(ctx, filepath.Join(binDir, "perflockd"), "--socket", sock2, "--driver", driver, "--cgroup-name", e.cgName)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // it should exit at once
	out, err := second(ctx, "cgroupfs").CombinedOutput()
	cancel()
	if code := exitCode(err); code != 69 || !strings.Contains(string(out), "another perflockd drives these jobs") {
		t.Fatalf("second perflockd on the same subtree: exit %d, want 69; output %q", code, out)
	}
	d := second(context.Background(), "auto")
	log := &syncBuffer{}
	d.Stdout, d.Stderr = log, log
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Signal(syscall.SIGTERM); d.Wait() })
	e.waitFor("the second daemon to serve", func() bool { return strings.Contains(log.String(), "perflockd serving") })
	if !strings.Contains(log.String(), "driver=none") {
		t.Fatalf("second perflockd with --driver auto: %s", log)
	}
	// The first daemon's jobs are as they were: P still frozen.
	e.waitQueue("P:frozen X:running")
	e.finish("X", 0)
	e.exit(x)
	e.waitQueue("P:running")
	e.finish("P", 0)
	e.exit(p)
}
