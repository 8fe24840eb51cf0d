package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The systemd tier: perflockd installed with `perflockd install`, started by
// socket activation, jobs in transient scopes. These tests run as root in a
// QEMU guest with systemd as PID 1 (make test-systemd); elsewhere they skip.

const (
	systemSocket = "/run/perflock/perflock.sock"
)

var setupOnce sync.Once
var setupErr string

// newSystemEnv is an env on the system daemon, installed and socket-enabled
// once per run.
func newSystemEnv(t *testing.T) *env {
	t.Helper()
	if !systemdTier {
		t.Skip("systemd-tier test: set PERFLOCK_TEST_SYSTEMD=1 in a host booted with systemd (make test-systemd runs it in QEMU guests)")
	}
	setupOnce.Do(func() { setupErr = systemSetup() })
	if setupErr != "" {
		t.Fatal(setupErr)
	}
	dir, err := os.MkdirTemp("", "ple")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777) // jobs of the other user report and count here
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{t: t, dir: dir, sock: systemSocket, agents: map[string]net.Conn{}, notify: make(chan struct{}, 1)}
	e.listenAgents()
	os.Chmod(filepath.Join(dir, "agents"), 0o777)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("journalctl", "-u", "perflockd*", "--no-pager", "-n", "150").CombinedOutput()
			t.Logf("perflockd journal:\n%s", out)
		}
	})
	return e
}

func systemSetup() string {
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return name + " " + strings.Join(args, " ") + ": " + err.Error() + ": " + string(out)
		}
		return ""
	}
	if msg := run(filepath.Join(binDir, "perflockd"), "install"); msg != "" {
		return msg
	}
	if msg := run("systemctl", "enable", "--now", "perflockd.socket"); msg != "" {
		return msg
	}
	if err := ensureSecondUser(); err != nil {
		return err.Error()
	}
	return ""
}

// systemctl runs systemctl, bounded: a call that hangs fails the test (with
// the journal, see newSystemEnv) instead of the whole guest's time limit.
func systemctl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("systemctl %s did not return within 2 minutes: %s", strings.Join(args, " "), out)
	}
	return strings.TrimSpace(string(out))
}

// show reads one property of a unit.
func show(t *testing.T, unit, prop string) string {
	t.Helper()
	return systemctl(t, "show", unit, "--value", "-p", prop)
}

// waitShow polls one property of a unit until it reads want, and fails the
// test with the last value after settleTime. For what the daemon changes
// after an event the test sees first: its StatusText (sent once a second),
// a slice's FreezerState after a thaw that systemd completes on its own.
func waitShow(t *testing.T, unit, prop, want string) {
	t.Helper()
	eventually(t, settleTime, fmt.Sprintf("%s %s=%q", unit, prop, want), func() (string, bool) {
		v := show(t, unit, prop)
		return v, v == want
	})
}

// The first client starts perflockd through perflockd.socket.
func TestSystemdSocketActivationByFirstClient(t *testing.T) {
	e := newSystemEnv(t)
	if st := systemctl(t, "is-active", "perflockd.service"); st == "active" {
		t.Logf("perflockd.service already active (another test ran first)")
	} else if systemctl(t, "is-active", "perflockd.socket") != "active" {
		t.Fatalf("perflockd.socket not active: %s", systemctl(t, "status", "perflockd.socket"))
	}
	p := e.start("perfrun", []string{"--socket", e.sock, "--", "sh", "-c", "exit 7"})
	if code := e.exit(p); code != 7 {
		t.Fatalf("perfrun -- sh -c 'exit 7': exit %d: %s", code, p.stderr)
	}
	if st := systemctl(t, "is-active", "perflockd.service"); st != "active" {
		t.Fatalf("perflockd.service %s after the first client", st)
	}
	// perflockd releases the job once its scope is empty, after perfrun
	// has exited, and says so in its status at its next tick.
	waitShow(t, "perflockd.service", "StatusText", "idle")
}

// An exclusive job runs in its own scope in perflock-exclusive.slice with
// every online CPU; wholock and systemctl list it.
func TestSystemdExclusiveJobRunsInAScopeWithEveryCPU(t *testing.T) {
	e := newSystemEnv(t)
	x := e.job("perfrun", "X", []string{"-v"})
	e.started("X")
	es := e.list()
	if len(es) != 1 || !strings.HasPrefix(es[0].Where, "perflock-x-") || !strings.HasSuffix(es[0].Where, ".scope") {
		t.Fatalf("wholock: %+v", es)
	}
	scope := es[0].Where
	online, _ := os.ReadFile("/sys/devices/system/cpu/online")
	for prop, want := range map[string]string{
		"Slice":       "perflock-exclusive.slice",
		"AllowedCPUs": strings.TrimSpace(string(online)),
		"CPUWeight":   "10000",
		"ActiveState": "active",
	} {
		if got := show(t, scope, prop); got != want {
			t.Errorf("%s %s=%q, want %q", scope, prop, got, want)
		}
	}
	if d := show(t, scope, "Description"); !strings.Contains(d, "root") || !strings.Contains(d, "-test.run") {
		t.Errorf("%s Description %q names neither the user nor the command", scope, d)
	}
	cg, _ := os.ReadFile("/proc/" + strconv.Itoa(es[0].ChildPID) + "/cgroup")
	if !strings.Contains(string(cg), "/perflock.slice/perflock-exclusive.slice/"+scope) {
		t.Errorf("the job's cgroup is %q, want it in %s", cg, scope)
	}
	status := systemctl(t, "status", "--no-pager", "perflock.slice")
	t.Logf("systemctl status perflock.slice:\n%s", status)
	if !strings.Contains(status, scope) || !strings.Contains(status, "-test.run") {
		t.Errorf("systemctl status perflock.slice does not show the job and its command")
	}
	t.Logf("systemctl status perflockd:\n%s", systemctl(t, "status", "--no-pager", "perflockd.service"))
	e.finish("X", 0)
	if code := e.exit(x); code != 0 {
		t.Fatalf("perfrun exit %d: %s", code, x.stderr)
	}
	e.waitQueue("")
}

// pls jobs of another user run in perflock-shared.slice, are frozen while a
// perfrun job runs (FreezerState, and a counter that stops) and thawed after.
func TestSystemdPlsJobsOfAnotherUserFreezeWhilePerfrunRuns(t *testing.T) {
	e := newSystemEnv(t)
	counter := filepath.Join(e.dir, "count")
	p := e.jobAs(secondUser, "pls", "P", nil, envCount+"="+counter)
	e.started("P")
	read := func() int {
		b, _ := os.ReadFile(counter)
		n, _ := strconv.Atoi(string(b))
		return n
	}
	advances := func() bool {
		n := read()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if read() > n {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	if !advances() {
		t.Fatal("the pls job's counter does not advance")
	}
	es := e.list()
	if len(es) != 1 || es[0].User != secondUser || !strings.HasPrefix(es[0].Where, "perflock-s-") {
		t.Fatalf("wholock: %+v", es)
	}
	pscope := es[0].Where
	if s := show(t, pscope, "Slice"); s != "perflock-shared.slice" {
		t.Errorf("%s Slice=%s", pscope, s)
	}
	if w := show(t, pscope, "CPUWeight"); w != "idle" && w != "0" && w != "1" {
		t.Errorf("%s CPUWeight=%s, want idle", pscope, w)
	}
	x := e.job("perfrun", "X", nil)
	e.started("X")
	if fs := show(t, "perflock-shared.slice", "FreezerState"); fs != "frozen" {
		t.Fatalf("perflock-shared.slice FreezerState=%s while perfrun runs", fs)
	}
	n := read()
	time.Sleep(time.Second) // a running job would count ~1000 times
	if m := read(); m != n {
		t.Fatalf("counter advanced from %d to %d while frozen", n, m)
	}
	t.Logf("systemctl status perflockd:\n%s", systemctl(t, "status", "--no-pager", "perflockd.service"))
	t.Logf("systemctl status perflock.slice:\n%s", systemctl(t, "status", "--no-pager", "perflock.slice"))
	// The status follows the queue at the daemon's next tick.
	eventually(t, settleTime, "perflockd's StatusText to tell of the running and the frozen job", func() (string, bool) {
		st := show(t, "perflockd.service", "StatusText")
		return st, strings.Contains(st, "1 exclusive running") && strings.Contains(st, "1 shared frozen")
	})
	e.finish("X", 0)
	e.exit(x)
	if !advances() {
		t.Fatal("the pls job did not resume after perfrun")
	}
	// The job counts as soon as its cgroup thaws; systemd's FreezerState
	// follows when systemd has seen the thaw complete.
	waitShow(t, "perflock-shared.slice", "FreezerState", "running")
	e.finish("P", 0)
	if code := e.exit(p); code != 0 {
		t.Fatalf("pls exit %d: %s", code, p.stderr)
	}
	e.waitQueue("")
}

// kill -9 of perfrun keeps the lease while its scope has processes.
func TestSystemdLeaseOutlivesAKilledPerfrun(t *testing.T) {
	leaseOutlivesKilledPerfrun(t, newSystemEnv(t))
}

// --max-runtime becomes the scope's RuntimeMaxUSec; systemd stops the job.
func TestSystemdMaxRuntimeStopsTheJob(t *testing.T) {
	e := newSystemEnv(t)
	x := e.job("perfrun", "X", []string{"--max-runtime", "3"})
	e.started("X")
	es := e.list()
	if len(es) != 1 {
		t.Fatalf("wholock: %+v", es)
	}
	if got := show(t, es[0].Where, "RuntimeMaxUSec"); got != "3s" {
		t.Errorf("%s RuntimeMaxUSec=%q, want 3s", es[0].Where, got)
	}
	if code := e.exit(x); code != 128+15 {
		t.Fatalf("perfrun --max-runtime 3: exit %d, want 143 (stopped with SIGTERM): %s", code, x.stderr)
	}
	e.waitQueue("")
}

// perflockd.service killed with SIGKILL while an exclusive job runs, a pls
// job is frozen and a request waits: systemd restarts it (Restart=), the new
// daemon re-adopts the scopes, the shared slice stays frozen, the waiter
// rejoins, and all goes on in order.
func TestSystemdRestartedDaemonReadoptsScopes(t *testing.T) {
	e := newSystemEnv(t)
	counter := filepath.Join(e.dir, "count")
	p := e.jobAs(secondUser, "pls", "P", nil, envCount+"="+counter)
	e.started("P")
	x := e.job("perfrun", "X", nil)
	e.started("X")
	a := e.job("perfrun", "A", []string{"-v"})
	e.waitQueue("P:frozen X:running A:waiting")
	before := show(t, "perflockd.service", "MainPID")
	systemctl(t, "kill", "--signal=SIGKILL", "perflockd.service")
	e.waitFor("systemd to restart perflockd", func() bool {
		pid := show(t, "perflockd.service", "MainPID")
		return pid != before && pid != "0" && systemctl(t, "is-active", "perflockd.service") == "active"
	})
	e.waitQueue("P:frozen X:running A:waiting")
	if fs := show(t, "perflock-shared.slice", "FreezerState"); fs != "frozen" {
		t.Fatalf("perflock-shared.slice FreezerState=%s after the restart", fs)
	}
	e.finish("X", 0)
	e.exit(x)
	e.started("A")
	e.finish("A", 0)
	if code := e.exit(a); code != 0 {
		t.Fatalf("perfrun A: exit %d: %s", code, a.stderr)
	}
	e.waitQueue("P:running")
	waitShow(t, "perflock-shared.slice", "FreezerState", "running")
	e.finish("P", 0)
	e.exit(p)
	e.waitQueue("")
}

// While perflockd.service drives the perflock units, a second perflockd
// (a per-user one started as root, say) is refused the systemd driver: it
// would adopt, freeze and thaw the service's jobs.
func TestSystemdSecondDaemonIsRefusedTheUnits(t *testing.T) {
	e := newSystemEnv(t)
	x := e.job("perfrun", "X", nil) // the service runs
	e.started("X")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "perflockd"), "--socket", filepath.Join(t.TempDir(), "second.sock"), "--driver", "systemd").CombinedOutput()
	if code := exitCode(err); code != 69 || !strings.Contains(string(out), "another perflockd drives these jobs") {
		t.Fatalf("second perflockd --driver systemd: exit %d, want 69; output %q", code, out)
	}
	e.finish("X", 0)
	e.exit(x)
	e.waitQueue("")
}

// perflockd's throttle flags become properties of every pls scope.
func TestSystemdSharedThrottleFlagsReachPlsScopes(t *testing.T) {
	e := newSystemEnv(t)
	dropin := "/etc/systemd/system/perflockd.service.d/throttle.conf"
	os.MkdirAll(filepath.Dir(dropin), 0o755)
	conf := "[Service]\nExecStart=\nExecStart=" + filepath.Join(binDir, "perflockd") +
		" --driver auto --shared-cpu-quota 50 --shared-cpus 0 --shared-memory-high 200000000\n"
	if err := os.WriteFile(dropin, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	restart := func() {
		systemctl(t, "daemon-reload")
		if out := systemctl(t, "restart", "perflockd.service"); out != "" {
			t.Fatalf("restart perflockd: %s", out)
		}
	}
	t.Cleanup(func() {
		os.Remove(dropin)
		restart()
	})
	restart()
	p := e.job("pls", "P", nil)
	e.started("P")
	es := e.list()
	if len(es) != 1 {
		t.Fatalf("wholock: %+v", es)
	}
	for prop, want := range map[string]string{
		"CPUQuotaPerSecUSec": "500ms",
		"AllowedCPUs":        "0",
		"MemoryHigh":         "200000000",
	} {
		if got := show(t, es[0].Where, prop); got != want {
			t.Errorf("%s %s=%q, want %q", es[0].Where, prop, got, want)
		}
	}
	e.finish("P", 0)
	e.exit(p)
	e.waitQueue("")
}

// A group lock under systemd: members run together, each in its own scope,
// and an exclusive job waits for the group.
func TestSystemdGroupMembersRunTogether(t *testing.T) {
	e := newSystemEnv(t)
	g1 := e.job("perfrun", "G1", []string{"--group", "7"})
	e.started("G1")
	g2 := e.job("perfrun", "G2", []string{"--group", "7"})
	e.started("G2")
	x := e.job("perfrun", "X", nil)
	e.waitQueue("G1:running G2:running X:waiting")
	for _, en := range e.list()[:2] {
		if en.Mode != "group(7)" || show(t, en.Where, "ActiveState") != "active" {
			t.Errorf("%s: mode %s, scope %s %s", en.Job, en.Mode, en.Where, show(t, en.Where, "ActiveState"))
		}
	}
	e.finish("G1", 0)
	e.exit(g1)
	e.waitQueue("G2:running X:waiting")
	e.finish("G2", 0)
	e.exit(g2)
	e.started("X")
	e.finish("X", 0)
	e.exit(x)
	e.waitQueue("")
}

// perfrun --report under systemd: the job's CPU comes from its scope, the
// scope has the cpu controller (CPUWeight), so throttling is measured, and a
// frozen pls job's slice used no CPU.
func TestSystemdReportMeasuresScopeAndFrozenSlice(t *testing.T) {
	e := newSystemEnv(t)
	p := e.job("pls", "P", nil, envBurn+"=forever")
	e.started("P")
	x := e.job("perfrun", "X", []string{"--report=json"}, envBurn+"=200ms")
	used := e.burned("X")
	e.finish("X", 0)
	if code := e.exit(x); code != 0 {
		t.Fatalf("perfrun --report=json: exit %d: %s", code, x.stderr)
	}
	r := reportOf(t, x)
	t.Logf("report %+v; job %+v throttling %+v shared %+v", r, r.JobCPU, r.Throttling, r.Shared)
	if r.Driver != "systemd" || r.JobCPU == nil || time.Duration(r.JobCPU.TotalUS)*time.Microsecond < used {
		t.Fatalf("job CPU %+v (burned %v, unavailable %v)", r.JobCPU, used, r.Unavailable)
	}
	if r.Throttling == nil {
		t.Errorf("no throttling figures in a scope with the cpu controller: %v", r.Unavailable)
	}
	if !strings.HasSuffix(r.JobCgroup, "/perflock.slice/perflock-exclusive.slice") {
		t.Errorf("job figures from %q, want perflock-exclusive.slice", r.JobCgroup)
	}
	// A correct freeze uses no CPU, but in an emulated guest on a busy host
	// a vCPU can stall between a task's freeze and its switch out, and the
	// CPU time it used before is charged then: a sliver (123us seen), where
	// the pls hog, had it run, would have used most of a CPU.
	if r.Shared == nil || r.Shared.FrozenJobs != 1 || r.Shared.CPUUS > r.WallUS/100 {
		t.Errorf("shared %+v (unavailable %v), want 1 frozen and no CPU to speak of", r.Shared, r.Unavailable)
	} else if !r.Shared.FrozenThroughout {
		t.Logf("the frozen shared side was charged %dus during the run", r.Shared.CPUUS)
	}
	e.finish("P", 0)
	e.exit(p)
	e.waitQueue("")
}
