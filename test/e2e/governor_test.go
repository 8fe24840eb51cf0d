package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/internal/cpufreqtest"
	"github.com/perflock/perflock/runner"
)

// fakeCpufreq makes a fake cpufreq tree of n CPUs in the test's folder,
// for perflockd --cpufreq-root.
func (e *env) fakeCpufreq(n int) *cpufreqtest.Tree {
	return cpufreqtest.New(e.t, filepath.Join(e.dir, "cpu"), n, "")
}

// governorState is where the daemon saves the settings before a pin:
// beside its socket.
func (e *env) governorState() string { return filepath.Join(e.dir, "governor.json") }

// waitRestored waits until both CPUs of tree are back to their own
// settings and the state file is gone: the daemon restores them off its
// loop once the lease has ended, which no client hears of.
func (e *env) waitRestored(tree *cpufreqtest.Tree) {
	e.t.Helper()
	e.waitFor("the cpufreq settings to be restored ("+tree.All(2)+")", func() bool {
		_, err := os.Stat(e.governorState())
		return tree.All(2) == cpufreqtest.Original && os.IsNotExist(err)
	})
}

// readCpufreq is a job that writes what it reads of the tree, one line per
// CPU ("governor min-max"), to out.
func readCpufreq(root, out string) []string {
	script := `cd "$1" && for c in cpu0 cpu1; do echo "$(cat $c/cpufreq/scaling_governor) $(cat $c/cpufreq/scaling_min_freq)-$(cat $c/cpufreq/scaling_max_freq)"; done > "$2"`
	return []string{"sh", "-c", script, "sh", root, out}
}

// perfrun --governor: the job itself sees the pinned frequency while it
// runs; once its lease ends, the settings are the machine's own again.
func TestGovernorPinsWhileTheJobRuns(t *testing.T) {
	for _, driver := range drivers() {
		t.Run(driver, func(t *testing.T) {
			e := newEnv(t, "", "")
			tree := e.fakeCpufreq(2)
			e.startDaemon(driver, "freeze", "--cpufreq-root", tree.Root)
			for i, tc := range []struct{ governor, want string }{
				{"performance", "performance 800000-" + cpufreqtest.HWMax},
				{"50%", "performance 1750000-1750000"}, // 50% of 3.5 GHz
			} {
				out := filepath.Join(e.dir, "seen-"+strconv.Itoa(i))
				args := append([]string{"--socket", e.sock, "-v", "--governor", tc.governor, "--"}, readCpufreq(tree.Root, out)...)
				p := e.start("perfrun", args)
				if code := e.exit(p); code != 0 {
					t.Fatalf("perfrun --governor %s: exit %d: %s", tc.governor, code, p.stderr)
				}
				if !strings.Contains(p.stderr.String(), "CPU frequency pinned") {
					t.Errorf("perfrun -v did not say the frequency was pinned: %s", p.stderr)
				}
				seen, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				if want := tc.want + "\n" + tc.want + "\n"; string(seen) != want {
					t.Errorf("--governor %s: the job saw %q, want %q", tc.governor, seen, want)
				}
				e.waitRestored(tree)
			}
			// It logs the restore once it is done, off its loop.
			eventually(t, settleTime, "the daemon to log the pin and the restore", func() (string, bool) {
				l := e.dlog.String()
				return l, strings.Contains(l, "CPU frequency pinned") && strings.Contains(l, "CPU frequency settings restored")
			})
		})
	}
}

// perflockd killed with SIGKILL while a pinned job runs: the restarted
// daemon adopts the job and keeps the pin, and restores the settings when
// the job ends.
func TestGovernorPinSurvivesADaemonRestart(t *testing.T) {
	if !cgroupfsAvailable() {
		t.Skip("needs root and a writable cgroup2 tree (the cgroupfs driver re-adopts jobs)")
	}
	e := newEnv(t, "", "")
	tree := e.fakeCpufreq(2)
	e.startDaemon("cgroupfs", "freeze", "--cpufreq-root", tree.Root)
	x := e.job("perfrun", "X", []string{"--governor", "performance"})
	e.started("X")
	pinned := "performance 800000-" + cpufreqtest.HWMax
	tree.WantAll(2, pinned)

	e.restartDaemon()
	e.waitQueue("X:running")
	tree.WantAll(2, pinned)
	if _, err := os.Stat(e.governorState()); err != nil {
		t.Fatalf("state file after the restart: %v", err)
	}
	if es := e.list(); len(es) != 1 || es[0].Governor != "performance" {
		t.Errorf("wholock --json after the restart: %+v, want governor performance", es)
	}
	if !strings.Contains(e.dlog.String(), "kept the CPU frequency pinned for adopted jobs") {
		t.Errorf("the restarted daemon did not say it kept the pin:\n%s", e.dlog)
	}
	e.finish("X", 0)
	if code := e.exit(x); code != 0 {
		t.Fatalf("perfrun X: exit %d: %s", code, x.stderr)
	}
	e.waitQueue("")
	e.waitRestored(tree)
}

// A pin left by a daemon that died, with no job of it running, is
// restored before the new daemon serves.
func TestGovernorLeftoverRestoredAtStart(t *testing.T) {
	e := newEnv(t, "", "")
	tree := e.fakeCpufreq(2)
	if err := governor.New(tree.Root, e.governorState()).Set(context.Background(), governor.Mode{Percent: 80}); err != nil {
		t.Fatal(err)
	}
	tree.WantAll(2, "performance 2800000-2800000")
	e.startDaemon(drivers()[0], "freeze", "--cpufreq-root", tree.Root)
	// The daemon accepts connections before it restores, but answers
	// only after: a listing is the event to wait for.
	if es := e.list(); len(es) != 0 {
		t.Fatalf("listing %+v, want none", es)
	}
	tree.WantAll(2, cpufreqtest.Original)
	if _, err := os.Stat(e.governorState()); !os.IsNotExist(err) {
		t.Errorf("state file after the restore: %v", err)
	}
	if !strings.Contains(e.dlog.String(), "restored the CPU frequency settings an earlier perflockd left pinned") {
		t.Errorf("the daemon did not log the restore:\n%s", e.dlog)
	}
}

// Without cpufreq, perfrun --governor fails at once with exit 69 and says
// why, even while another job holds the machine; the queue is untouched.
func TestGovernorWithoutCpufreqFailsAtOnce(t *testing.T) {
	e := newEnv(t, "", "")
	tree := e.fakeCpufreq(0)
	e.startDaemon(drivers()[0], "freeze", "--cpufreq-root", tree.Root)
	x := e.job("perfrun", "X", nil)
	e.started("X")
	p := e.start("perfrun", []string{"--socket", e.sock, "--governor", "performance", "--", "true"})
	if code := e.exit(p); code != runner.ExitUnavailable {
		t.Fatalf("perfrun --governor performance without cpufreq: exit %d, want 69: %s", code, p.stderr)
	}
	want := "perfrun: --governor performance: cpufreq is not available on this machine (no cpufreq driver, common in virtual machines): run without --governor"
	if got := strings.TrimSpace(p.stderr.String()); got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
	e.waitQueue("X:running")
	e.finish("X", 0)
	e.exit(x)
}

// Bad --governor values, --governor without the machine, and pls
// --governor are usage errors, found before any daemon is asked.
func TestGovernorUsageErrors(t *testing.T) {
	e := newEnv(t, "", "") // no daemon: reaching one would exit 69
	for _, tc := range []struct {
		prog string
		args []string
	}{
		{"perfrun", []string{"--governor", "0"}},
		{"perfrun", []string{"--governor", "101"}},
		{"perfrun", []string{"--governor", "fast"}},
		{"perfrun", []string{"--governor", "70.5%"}},
		{"perfrun", []string{"--governor", ""}},
		{"perfrun", []string{"--governor", "performance", "-L", "backup"}},
		{"pls", []string{"--governor", "performance"}},
		{"pls", []string{"--governor", "none"}},
	} {
		args := append(append([]string{"--socket", e.sock}, tc.args...), "--", "true")
		p := e.start(tc.prog, args)
		if code := e.exit(p); code != runner.ExitUsage || !strings.Contains(p.stderr.String(), "--governor") {
			t.Errorf("%s %v: exit %d, want 64 and a word on --governor: %s", tc.prog, tc.args, code, p.stderr)
		}
	}
}

// A per-user perflockd (not root) cannot write cpufreq: it refuses
// --governor at once and says that the system daemon is needed.
func TestGovernorNeedsTheSystemDaemon(t *testing.T) {
	requireSecondUser(t)
	e := newEnv(t, "", "")
	e.openForOthers()
	tree := e.fakeCpufreq(2) // root's: the second user may only read it
	dir := filepath.Join(e.dir, "user")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("chown", secondUser+":"+secondUser, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	sock := filepath.Join(dir, "perflock.sock")
	as := func(prog string, args ...string) *proc {
		return e.startPath("setpriv", append([]string{"--reuid", secondUser, "--regid", secondUser, "--clear-groups", "--", filepath.Join(binDir, prog)}, args...))
	}
	d := as("perflockd", "--socket", sock, "--driver", "none", "--cpufreq-root", tree.Root)
	e.waitFor("the per-user daemon to serve", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	p := as("perfrun", "--socket", sock, "--governor", "70", "--", "true")
	if code := e.exit(p); code != runner.ExitUnavailable || !strings.Contains(p.stderr.String(), "not root") || !strings.Contains(p.stderr.String(), "system perflockd") {
		t.Errorf("perfrun --governor 70 on a per-user daemon: exit %d, want 69 and a word on the system daemon: %s", code, p.stderr)
	}
	tree.WantAll(2, cpufreqtest.Original)
	d.cmd.Process.Signal(os.Interrupt)
	e.exit(d)
}
