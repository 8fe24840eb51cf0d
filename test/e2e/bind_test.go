package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/perflock/perflock/cgroup"
)

// schedulerCgroup makes a cgroup outside perflock's tree, as a cluster
// scheduler makes one for its job, and returns its path below the cgroup2
// root and its directory.
func schedulerCgroup(t *testing.T) (string, string) {
	t.Helper()
	mount, err := cgroup.Mountpoint()
	if err != nil {
		t.Skipf("no cgroup2 hierarchy: %v", err)
	}
	path := fmt.Sprintf("/perflock-e2e-sched-%d-%d/job_42", os.Getpid(), time.Now().UnixNano())
	dir := filepath.Join(mount, path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup: %v", err)
	}
	t.Cleanup(func() {
		os.Remove(dir)
		os.Remove(filepath.Dir(dir))
	})
	return path, dir
}

// startIn starts sleep in the cgroup at dir, as the scheduler starts its
// job's processes there, and returns it.
func startIn(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	c := exec.Command("sleep", "600")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(c.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// bind runs perfrun --bind-cgroup as a Prolog does and returns the job's
// name it prints.
func (e *env) bind(path string, flags ...string) string {
	e.t.Helper()
	args := append([]string{"--socket", e.sock, "--bind-cgroup", path, "--owner", "ana"}, flags...)
	out, err := exec.Command(filepath.Join(binDir, "perfrun"), append(args, "--", "slurm", "job", "42")...).Output()
	name := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(name, "x-") {
		e.t.Fatalf("perfrun --bind-cgroup: %q, %v", out, err)
	}
	return name
}

// A scheduler's Prolog binds the machine's lease to its job's cgroup and
// exits: the lease holds while a process is in the cgroup (pls work frozen,
// a local perfrun waiting, the node said busy meanwhile) and ends once it
// is empty, with no Epilog.
func TestABoundLeaseHoldsTheMachineWhileItsCgroupHasProcesses(t *testing.T) {
	if !cgroupfsAvailable() {
		t.Skip("needs root and a cgroup2 hierarchy")
	}
	path, dir := schedulerCgroup(t)
	dirForBusy := t.TempDir()
	hook := filepath.Join(dirForBusy, "busy")
	said := filepath.Join(dirForBusy, "said")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho \"$*\" >> "+said+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, "cgroupfs", "freeze", "--busy-command", hook)
	saidLines := func() string { b, _ := os.ReadFile(said); return string(b) }
	eventually(t, settleTime, "the busy command to say idle at start", func() (string, bool) {
		s := saidLines()
		return s, s == "idle\n"
	})

	bg := e.job("pls", "BG", nil)
	e.started("BG")
	name := e.bind(path)
	e.waitQueue("BG:frozen 42:running")
	es := e.list()
	if es[1].Job != name || es[1].User != "ana" || strings.Join(es[1].Command, " ") != "slurm job 42" || es[1].Where != path {
		t.Fatalf("the bound job is listed as %+v, want %s of ana, slurm job 42, at %s", es[1], name, path)
	}
	sleeper := startIn(t, dir)
	local := e.job("perfrun", "LOCAL", nil)
	e.waitQueue("BG:frozen 42:running LOCAL:waiting")
	eventually(t, settleTime, "the busy command to say busy for LOCAL", func() (string, bool) {
		s := saidLines()
		return s, strings.HasPrefix(s, "idle\nbusy perflock: exclusive job x-") && strings.Contains(s, "LOCAL")
	})
	if e.hasEvent("start LOCAL") {
		t.Fatal("LOCAL started while the bound cgroup had a process")
	}

	sleeper.Process.Kill()
	sleeper.Wait()
	e.started("LOCAL")
	e.finish("LOCAL", 0)
	if code := e.exit(local); code != 0 {
		t.Fatalf("LOCAL: exit %d: %s", code, local.stderr)
	}
	e.waitQueue("BG:running")
	eventually(t, settleTime, "the busy command to say idle after LOCAL", func() (string, bool) {
		s := saidLines()
		return s, strings.HasSuffix(s, "\nidle\n") && strings.Count(s, "busy") == 1
	})
	e.finish("BG", 0)
	e.exit(bg)
}

// A bound lease is adopted by a restarted daemon, and one whose cgroup
// never has a process ends after its grace.
func TestABoundLeaseSurvivesARestartAndOneNeverUsedEnds(t *testing.T) {
	if !cgroupfsAvailable() {
		t.Skip("needs root and a cgroup2 hierarchy")
	}
	path, dir := schedulerCgroup(t)
	e := newEnv(t, "cgroupfs", "freeze")
	e.bind(path)
	sleeper := startIn(t, dir)
	e.waitQueue("42:running")
	e.restartDaemon()
	e.waitQueue("42:running")
	p := e.job("perfrun", "AFTER", []string{"-n"})
	if code := e.exit(p); code != 75 {
		t.Fatalf("perfrun -n beside an adopted bound lease: exit %d, want 75: %s", code, p.stderr)
	}
	sleeper.Process.Kill()
	sleeper.Wait()
	e.waitQueue("")

	// Never used: the lease ends after its grace.
	unused, _ := schedulerCgroup(t)
	start := time.Now()
	e.bind(unused, "--bind-grace", "1s")
	e.waitQueue("")
	if d := time.Since(start); d < time.Second {
		t.Fatalf("the lease of a never-used cgroup ended after %v, before its grace of 1s", d)
	}
}

// Only root and the users perflockd --bind-users names may bind a lease.
func TestOnlyRootOrABindUserMayBind(t *testing.T) {
	requireSecondUser(t)
	if !cgroupfsAvailable() {
		t.Skip("needs root and a cgroup2 hierarchy")
	}
	path, _ := schedulerCgroup(t)
	e := newEnv(t, "cgroupfs", "freeze")
	e.openForOthers()
	bindAs := func() *proc {
		return e.startPath("setpriv", []string{"--reuid", secondUser, "--regid", secondUser, "--clear-groups", "--",
			filepath.Join(binDir, "perfrun"), "--socket", e.sock, "--bind-cgroup", path, "--", "slurm", "job", "42"})
	}
	p := bindAs()
	if code := e.exit(p); code != 69 || !strings.Contains(p.stderr.String(), "--bind-users") {
		t.Fatalf("perfrun --bind-cgroup as %s: exit %d, want 69 saying --bind-users: %s", secondUser, code, p.stderr)
	}
	if es := e.list(); len(es) != 0 {
		t.Fatalf("a refused bind left %+v", es)
	}
	e.daemon.Process.Kill()
	e.daemon.Wait()
	e.dargs = append(e.dargs, "--bind-users", secondUser)
	e.runDaemon()
	p = bindAs()
	if code := e.exit(p); code != 0 {
		t.Fatalf("perfrun --bind-cgroup as %s named by --bind-users: exit %d: %s", secondUser, code, p.stderr)
	}
	e.waitQueue("42:running")
}
