package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Where no shield can work (this host's hybrid cgroups offer no cpuset to
// cgroup2; the none driver has nothing to confine), perflockd --shield says
// so at start and serves; a run report says "no shield" and why.
func TestShieldThatCannotWorkIsSaidAtStartAndInReports(t *testing.T) {
	for _, driver := range drivers() {
		t.Run(driver, func(t *testing.T) {
			e := newEnvWith(t, driver, "freeze", "--shield", "0")
			if !strings.Contains(e.dlog.String(), "no shield on this machine") {
				t.Fatalf("perflockd --shield 0 did not say at start that it has no shield:\n%s", e.dlog)
			}
			p := e.start("perfrun", []string{"--socket", e.sock, "--report=json", "--", "true"})
			if code := e.exit(p); code != 0 {
				t.Fatalf("perfrun --report: exit %d: %s", code, p.stderr)
			}
			r := reportOf(t, p)
			if why := r.Unavailable["shield"]; r.Shield != nil || !strings.HasPrefix(why, "no shield: ") {
				t.Fatalf("report's shield %+v, unavailable %q: want no shield and why", r.Shield, why)
			}
		})
	}
}

// cpusAllowed is a process's Cpus_allowed_list.
func cpusAllowed(pid string) string {
	b, _ := os.ReadFile(filepath.Join("/proc", pid, "status"))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// With --shield 0, while an exclusive job runs, a plain process of another
// user (not started through perflock) keeps to CPU 0, system.slice and
// user.slice show AllowedCPUs=0, and the job sees every CPU; a SIGKILL of
// perflockd does not lift it; after the job, each unit's earlier value is
// back, an administrator's own included.
func TestSystemdShieldConfinesOtherWorkWhileAnExclusiveJobRuns(t *testing.T) {
	e := newSystemEnv(t)
	online, _ := os.ReadFile("/sys/devices/system/cpu/online")
	all := strings.TrimSpace(string(online))
	// An administrator's own setting, to be put back.
	systemctl(t, "set-property", "--runtime", "user.slice", "AllowedCPUs="+all)
	dropin := "/etc/systemd/system/perflockd.service.d/shield.conf"
	os.MkdirAll(filepath.Dir(dropin), 0o755)
	conf := "[Service]\nExecStart=\nExecStart=" + filepath.Join(binDir, "perflockd") + " --driver auto --shield 0\n"
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
		systemctl(t, "stop", "perflock-plain.service")
		systemctl(t, "set-property", "--runtime", "user.slice", "AllowedCPUs=")
	})
	restart()
	if out, err := exec.Command("systemd-run", "--unit=perflock-plain", "-p", "User="+secondUser, "sleep", "600").CombinedOutput(); err != nil {
		t.Fatalf("systemd-run: %v: %s", err, out)
	}
	hog := show(t, "perflock-plain.service", "MainPID")
	if cpusAllowed(hog) != all {
		t.Fatalf("the plain process %s has Cpus_allowed_list %q before the job, want %s", hog, cpusAllowed(hog), all)
	}
	sysBefore := show(t, "system.slice", "AllowedCPUs")

	x := e.job("perfrun", "X", nil)
	e.started("X")
	es := e.list()
	if len(es) != 1 || !es[0].Shielded {
		t.Fatalf("wholock: %+v; want X running shielded", es)
	}
	check := func(when string) {
		t.Helper()
		eventually(t, settleTime, "the plain process on CPU 0 "+when, func() (string, bool) {
			got := cpusAllowed(hog)
			return got, got == "0"
		})
		for _, u := range []string{"system.slice", "user.slice"} {
			if got := show(t, u, "AllowedCPUs"); got != "0" {
				t.Errorf("%s AllowedCPUs=%q %s, want 0", u, got, when)
			}
		}
		if got := cpusAllowed(strconv.Itoa(es[0].ChildPID)); got != all {
			t.Errorf("the job's Cpus_allowed_list %q %s, want every CPU, %s", got, when, all)
		}
	}
	check("while the job runs")

	before := show(t, "perflockd.service", "MainPID")
	systemctl(t, "kill", "--signal=SIGKILL", "perflockd.service")
	e.waitFor("systemd to restart perflockd", func() bool {
		pid := show(t, "perflockd.service", "MainPID")
		return pid != before && pid != "0" && systemctl(t, "is-active", "perflockd.service") == "active"
	})
	e.waitQueue("X:running")
	check("after perflockd was killed and restarted")

	e.finish("X", 0)
	if code := e.exit(x); code != 0 {
		t.Fatalf("X: exit %d: %s", code, x.stderr)
	}
	e.waitQueue("")
	waitShow(t, "system.slice", "AllowedCPUs", sysBefore)
	waitShow(t, "user.slice", "AllowedCPUs", all)
	eventually(t, settleTime, "the plain process on every CPU again", func() (string, bool) {
		got := cpusAllowed(hog)
		return got, got == all
	})

	p := e.start("perfrun", []string{"--socket", e.sock, "--report=json", "--", "sleep", "0.2"})
	if code := e.exit(p); code != 0 {
		t.Fatalf("perfrun --report: exit %d: %s", code, p.stderr)
	}
	if r := reportOf(t, p); r.Shield == nil || r.Shield.HousekeepingCPUs != "0" {
		t.Errorf("report %+v: want the shield on CPU 0", r)
	}
}
