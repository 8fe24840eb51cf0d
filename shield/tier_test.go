package shield

// Tests against a real systemd (the "systemd tier"). They need root on a host
// booted with systemd on cgroup v2 and run only with PERFLOCK_TEST_SYSTEMD=1;
// `make test-systemd` runs them inside QEMU guests (see test/vm/README.md).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perflock/perflock/internal/cpuset"
	"github.com/perflock/perflock/units"
)

var _ UnitConn = (*units.Conn)(nil)

const (
	tierShared    = "perflock-shared.slice"
	tierExclusive = "perflock-exclusive.slice"
)

func requireSystemd(t *testing.T) {
	t.Helper()
	if os.Getenv("PERFLOCK_TEST_SYSTEMD") != "1" {
		t.Skip("systemd tier: needs root on a real systemd host with cgroup v2; set PERFLOCK_TEST_SYSTEMD=1 (`make test-systemd` runs it in QEMU guests)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("PERFLOCK_TEST_SYSTEMD=1 but not root")
	}
}

// tier is one systemd-tier test's machine: a connection, the online CPUs,
// the housekeeping CPU (the first online one), and a busy process of
// another user (nobody) in system.slice, started with the test.
type tier struct {
	t            *testing.T
	ctx          context.Context
	conn         *units.Conn
	online, hk   cpuset.Set
	hog          int
	irqs, wqMask string // /proc/irq affinities and the workqueue mask before
}

func newTier(t *testing.T) *tier {
	requireSystemd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	conn, err := units.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	online, err := cpuset.ReadFile(DefaultOnline)
	if err != nil {
		t.Fatal(err)
	}
	if online.Len() < 2 {
		t.Skipf("a shield needs 2 CPUs or more; online: %s", online)
	}
	tr := &tier{t: t, ctx: ctx, conn: conn, online: online, hk: cpuset.Of(online.CPUs()[0])}
	if out, err := exec.Command("systemctl", "--version").Output(); err == nil {
		possible, _ := os.ReadFile(DefaultPossible)
		t.Logf("%s; CPUs online %s, possible %s, housekeeping %s", bytes.SplitN(out, []byte("\n"), 2)[0], online, bytes.TrimSpace(possible), tr.hk)
	}
	for _, s := range []string{tierShared, tierExclusive} {
		if err := conn.EnsureSlice(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	// An administrator's own AllowedCPUs= on user.slice, by hand. While
	// it is set, systemd keeps the cpuset controller at the root, which is
	// when removing another unit's AllowedCPUs= leaves its tasks narrow.
	tr.systemctl("set-property", "--runtime", "user.slice", "AllowedCPUs="+online.String())
	t.Cleanup(func() {
		tr.systemctl("set-property", "--runtime", "user.slice", "AllowedCPUs=")
		if got := cpusAllowed(t, os.Getpid()); got != online.String() {
			t.Logf("after the cleanup the test runs on CPUs %s, not %s", got, online)
		}
	})

	// The busy process of another user, in this test's service, in
	// system.slice.
	hog := exec.Command("nice", "-n", "19", "sh", "-c", "while :; do :; done")
	hog.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := hog.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hog.Process.Kill(); hog.Wait() })
	tr.hog = hog.Process.Pid
	if cg := cgroupOf(t, tr.hog); !strings.HasPrefix(cg, "/system.slice/") {
		t.Fatalf("the busy process is in %s, want system.slice", cg)
	}
	tr.wantCPUs("the busy process before the shield", tr.hog, online)
	tr.irqs, tr.wqMask = irqAffinities(t), readTrimmed(t, DefaultWorkqueueMask)
	return tr
}

func (tr *tier) shield(state string) *Shield {
	return New(state, NewSystemd(tr.conn, tierShared), NewIRQ(""), NewWorkqueue(""))
}

func (tr *tier) systemctl(args ...string) string {
	tr.t.Helper()
	out, err := exec.CommandContext(tr.ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		tr.t.Fatalf("systemctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// wantAllowedCPUs checks what `systemctl show` says of each unit's
// AllowedCPUs=.
func (tr *tier) wantAllowedCPUs(when string, want map[string]string) {
	tr.t.Helper()
	for _, u := range []string{"init.scope", "system.slice", "user.slice", tierShared, tierExclusive} {
		w, ok := want[u]
		if !ok {
			continue
		}
		if got := tr.systemctl("show", "-p", "AllowedCPUs", "--value", u); got != w {
			tr.t.Errorf("%s: %s has AllowedCPUs=%q, want %q", when, u, got, w)
		}
	}
}

// wantCPUs waits (a little: systemd applies a property in its loop) until
// pid's Cpus_allowed_list is want.
func (tr *tier) wantCPUs(what string, pid int, want cpuset.Set) {
	tr.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := cpusAllowed(tr.t, pid)
		if got == want.String() {
			return
		}
		if time.Now().After(deadline) {
			tr.t.Errorf("%s (pid %d, cgroup %s): Cpus_allowed_list %s, want %s", what, pid, cgroupOf(tr.t, pid), got, want)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startJob starts a process the way a perflock job starts under a raised
// shield (as a child of a confined client) and moves it into a scope in
// the exclusive slice.
func (tr *tier) startJob() int {
	tr.t.Helper()
	job := exec.Command("sleep", "600")
	if err := job.Start(); err != nil {
		tr.t.Fatal(err)
	}
	pid := job.Process.Pid
	scope := fmt.Sprintf("perflock-tiertest-shield-%d.scope", pid)
	if err := tr.conn.StartScope(tr.ctx, scope, tierExclusive, []uint32{uint32(pid)}); err != nil {
		tr.t.Fatal(err)
	}
	tr.t.Cleanup(func() {
		job.Process.Kill()
		job.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		tr.conn.Stop(ctx, scope)
	})
	return pid
}

// raised checks the machine while the shield is raised.
func (tr *tier) raised(s *Shield) {
	tr.t.Helper()
	tr.wantCPUs("the busy process of nobody in system.slice", tr.hog, tr.hk)
	tr.wantAllowedCPUs("raised", map[string]string{"init.scope": tr.hk.String(), "system.slice": tr.hk.String(), "user.slice": tr.hk.String(), tierShared: tr.hk.String(), tierExclusive: ""})
	if eff, err := tr.conn.EffectiveCPUs(tr.ctx, "system.slice"); err != nil || !eff.Equal(tr.hk) {
		tr.t.Errorf("raised: system.slice has EffectiveCPUs %s, %v; want %s", eff, err, tr.hk)
	}
	if got, err := cpuset.ParseHex(readTrimmed(tr.t, DefaultWorkqueueMask)); err != nil || !got.Equal(tr.hk) {
		tr.t.Errorf("raised: workqueue cpumask %s, %v; want CPUs %s", got, err, tr.hk)
	}
	job := tr.startJob()
	tr.wantCPUs("the exclusive job", job, tr.online)
	for _, l := range s.Report() {
		tr.t.Log(l)
	}
}

// lowered checks the machine after the shield is lowered: every unit's
// earlier AllowedCPUs=, the administrator's included, and every task wide
// again.
func (tr *tier) lowered(state string) {
	tr.t.Helper()
	tr.wantAllowedCPUs("lowered", map[string]string{"init.scope": "", "system.slice": "", "user.slice": tr.online.String(), tierShared: "", tierExclusive: ""})
	tr.wantCPUs("the busy process of nobody in system.slice", tr.hog, tr.online)
	tr.wantCPUs("this test, in system.slice", os.Getpid(), tr.online)
	if eff, err := tr.conn.EffectiveCPUs(tr.ctx, "system.slice"); err != nil || !(eff.IsEmpty() || eff.Equal(tr.online)) {
		tr.t.Errorf("lowered: system.slice has EffectiveCPUs %s, %v; want %s", eff, err, tr.online)
	}
	if got := irqAffinities(tr.t); got != tr.irqs {
		tr.t.Errorf("lowered: IRQ affinities\n%s\nwant as before\n%s", got, tr.irqs)
	}
	if got := readTrimmed(tr.t, DefaultWorkqueueMask); got != tr.wqMask {
		tr.t.Errorf("lowered: workqueue cpumask %s, want %s", got, tr.wqMask)
	}
	if _, err := os.Lstat(state); !os.IsNotExist(err) {
		tr.t.Errorf("lowered: state file %s: %v", state, err)
	}
}

// While the shield is raised, another user's busy process in system.slice
// runs on the housekeeping CPU only, and the slices show it; the exclusive
// job keeps every CPU; after Lower, every unit's earlier AllowedCPUs= is
// back (an administrator's own on user.slice too) and the process runs on
// every CPU again.
func TestSystemdShieldConfinesOtherWorkAndLowerRestoresIt(t *testing.T) {
	tr := newTier(t)
	state := filepath.Join(t.TempDir(), "shield.json")
	s := tr.shield(state)
	if err := s.Check(tr.ctx, tr.hk); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := s.Raise(tr.ctx, tr.hk); err != nil {
		t.Fatalf("Raise: %v", err)
	}
	t.Cleanup(func() { s.Lower(context.Background()) })
	b, _ := os.ReadFile(state)
	t.Logf("state file: %.1500s", b)
	tr.raised(s)
	if err := s.Lower(tr.ctx); err != nil {
		t.Fatalf("Lower: %v", err)
	}
	tr.lowered(state)

	// What Restore works around: with user.slice's own setting in place,
	// removing system.slice's AllowedCPUs= may leave its tasks narrow.
	tr.systemctl("set-property", "--runtime", "system.slice", "AllowedCPUs="+tr.hk.String())
	tr.wantCPUs("the busy process, system.slice set by hand", tr.hog, tr.hk)
	tr.systemctl("set-property", "--runtime", "system.slice", "AllowedCPUs=")
	time.Sleep(time.Second)
	t.Logf("a plain `systemctl set-property --runtime system.slice AllowedCPUs=` after AllowedCPUs=%s leaves the busy process on CPUs %s (EffectiveCPUs %s)",
		tr.hk, cpusAllowed(t, tr.hog), tr.systemctl("show", "-p", "EffectiveCPUs", "--value", "system.slice"))
	tr.systemctl("set-property", "--runtime", "system.slice", "AllowedCPUs="+tr.online.String())
	tr.systemctl("set-property", "--runtime", "system.slice", "AllowedCPUs=")
	tr.wantCPUs("the busy process, widened by hand", tr.hog, tr.online)
}

// The shield of a daemon killed mid-run holds (runtime properties outlive
// it) until the next daemon adopts the state file and lowers it.
func TestSystemdShieldOfAKilledDaemonIsAdoptedAndLowered(t *testing.T) {
	tr := newTier(t)
	state := filepath.Join(t.TempDir(), "shield.json")
	if err := tr.shield(state).Raise(tr.ctx, tr.hk); err != nil {
		t.Fatalf("Raise: %v", err)
	}
	// That daemon is gone; the next one starts with a new connection.
	conn, err := units.Connect(tr.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	tr.conn = conn
	s := tr.shield(state)
	if found, err := s.Adopt(); !found || err != nil {
		t.Fatalf("Adopt: %v, %v", found, err)
	}
	t.Cleanup(func() { s.Lower(context.Background()) })
	tr.raised(s)
	if err := s.Lower(tr.ctx); err != nil {
		t.Fatalf("Lower: %v", err)
	}
	tr.lowered(state)
}

func cpusAllowed(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/status has no Cpus_allowed_list", pid)
	return ""
}

func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	return ""
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// irqAffinities is every IRQ's smp_affinity_list, one "N: CPUs" a line.
func irqAffinities(t *testing.T) string {
	t.Helper()
	ps, _ := filepath.Glob(filepath.Join(DefaultIRQRoot, "*", "smp_affinity_list"))
	var b strings.Builder
	for _, p := range ps {
		v, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s: %s\n", filepath.Base(filepath.Dir(p)), strings.TrimSpace(string(v)))
	}
	return b.String()
}

// The cgroupfs backend against a real cgroup2 cpuset (the guests have one;
// hybrid hosts do not): a private subtree stands for the hierarchy, with a
// top-level cgroup "other" holding a process and perflock's tree with its
// exclusive and shared sides. The controller is enabled on the way there
// and disabled after, and the process is confined and widened again while
// a process on the exclusive side keeps every CPU.
func TestCgroupfsShieldOnARealCgroup2Tree(t *testing.T) {
	tr := newTier(t) // user.slice's own AllowedCPUs= keeps cpuset enabled at the root
	mount := filepath.Join("/sys/fs/cgroup", fmt.Sprintf("perflock-tiertest-cg-%d", os.Getpid()))
	dirs := []string{mount, mount + "/other", mount + "/perflock", mount + "/perflock/exclusive", mount + "/perflock/shared"}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var pids []int
	t.Cleanup(func() {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		for i := len(dirs) - 1; i >= 0; i-- {
			for range 100 { // rmdir fails while the killed process is not yet gone
				if err := os.Remove(dirs[i]); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	place := func(dir string) int {
		cmd := exec.Command("sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
		pids = append(pids, cmd.Process.Pid)
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(cmd.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		return cmd.Process.Pid
	}
	other := place(mount + "/other")
	t.Logf("%s/cgroup.controllers: %s", mount, readTrimmed(t, mount+"/cgroup.controllers"))

	state := filepath.Join(t.TempDir(), "shield.json")
	s := New(state, NewCgroupfs(mount, "perflock"))
	if err := s.Check(tr.ctx, tr.hk); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := s.Raise(tr.ctx, tr.hk); err != nil {
		t.Fatalf("Raise: %v", err)
	}
	t.Cleanup(func() { s.Lower(context.Background()) })
	b, _ := os.ReadFile(state)
	t.Logf("state file: %s", b)
	for _, l := range s.Report() {
		t.Log(l)
	}
	tr.wantCPUs("a process in a top-level cgroup", other, tr.hk)
	job := place(mount + "/perflock/exclusive")
	tr.wantCPUs("a process on the exclusive side", job, tr.online)
	for d, want := range map[string]string{"other": tr.hk.String(), "perflock/shared": tr.hk.String(), "perflock/exclusive": ""} {
		if got := readTrimmed(t, filepath.Join(mount, d, "cpuset.cpus")); got != want {
			t.Errorf("raised: %s/cpuset.cpus = %q, want %q", d, got, want)
		}
	}
	if err := s.Lower(tr.ctx); err != nil {
		t.Fatalf("Lower: %v", err)
	}
	tr.wantCPUs("a process in a top-level cgroup, lowered", other, tr.online)
	for _, d := range []string{mount, mount + "/perflock"} {
		if got := readTrimmed(t, d+"/cgroup.subtree_control"); strings.Contains(got, "cpuset") {
			t.Errorf("lowered: %s/cgroup.subtree_control = %q, want cpuset disabled again", d, got)
		}
	}
	if _, err := os.Stat(mount + "/other/cpuset.cpus"); !os.IsNotExist(err) {
		t.Errorf("lowered: other/cpuset.cpus still there: %v", err)
	}
}
