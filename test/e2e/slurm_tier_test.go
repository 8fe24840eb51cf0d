package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perflock/perflock/contrib/slurm"
)

// The Slurm tier: a one-node Slurm cluster (Debian's slurm-wlm and munge)
// in the bookworm guest, with contrib/slurm's Prolog, Epilog and
// perflockd --busy-command installed as README's "Slurm" section says.

const (
	slurmNode    = "perflock-vm" // the guest's hostname
	slurmAddr    = "10.9.0.1"
	slurmScripts = "/usr/lib/perflock/slurm"
	slurmDropIn  = "/etc/systemd/system/perflockd.service.d/slurm.conf"
	slurmWait    = 4 * time.Minute // a state Slurm reaches under emulation
)

var (
	slurmOnce sync.Once
	slurmErr  string
)

// slurmEnv is the system env with the cluster up.
func slurmEnv(t *testing.T) *env {
	t.Helper()
	e := newSystemEnv(t)
	if _, err := exec.LookPath("slurmctld"); err != nil {
		t.Skip("no Slurm in this guest: the bookworm guest has Debian's (test/vm/run)")
	}
	slurmOnce.Do(func() {
		if err := slurmSetup(); err != nil {
			slurmErr = err.Error()
		}
	})
	if slurmErr != "" {
		t.Fatal(slurmErr)
	}
	os.Chmod(e.dir, 0o777) // the batch jobs of the second user write here
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range [][]string{{"scontrol", "show", "node"}, {"squeue", "-a"}, {"tail", "-n", "60", "/var/log/slurm/slurmd.log"},
				{"tail", "-n", "40", "/var/log/slurm/slurmctld.log"}, {"journalctl", "-t", "perflock-slurm", "--no-pager"},
				{"journalctl", "-u", "slurmd", "--no-pager", "-n", "40"}, {"sh", "-c", "scontrol show config | grep -i -e prolog -e epilog"}} {
				out, _ := exec.Command(c[0], c[1:]...).CombinedOutput()
				t.Logf("%s:\n%s", strings.Join(c, " "), out)
			}
		}
	})
	return e
}

// slurmSetup installs contrib/slurm, configures a one-node cluster and
// starts munge, slurmctld and slurmd, and perflockd with the busy command.
func slurmSetup() error {
	run := func(name string, args ...string) error {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := os.MkdirAll(slurmScripts, 0o755); err != nil {
		return err
	}
	err := fs.WalkDir(slurm.Files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := slurm.Files.ReadFile(p)
		if err == nil {
			err = os.WriteFile(filepath.Join(slurmScripts, p), b, 0o755)
		}
		return err
	})
	if err != nil {
		return err
	}
	// The scripts find perfrun and wholock on the PATH, as the Debian
	// package installs them.
	for _, c := range []string{"perfrun", "wholock", "pls"} {
		os.Remove("/usr/local/bin/" + c)
		if err := os.Symlink(filepath.Join(binDir, c), "/usr/local/bin/"+c); err != nil {
			return err
		}
	}
	// Slurm resolves addresses with AI_ADDRCONFIG, which ignores loopback:
	// a dummy interface stands in for the network.
	for _, c := range [][]string{{"link", "add", "d0", "type", "dummy"}, {"addr", "add", slurmAddr + "/24", "dev", "d0"}, {"link", "set", "d0", "up"}} {
		if err := run("ip", c...); err != nil {
			return err
		}
	}
	hosts, _ := os.ReadFile("/etc/hosts")
	if err := os.WriteFile("/etc/hosts", append(hosts, []byte(slurmAddr+" "+slurmNode+"\n")...), 0o644); err != nil {
		return err
	}
	if _, err := os.Stat("/etc/munge/munge.key"); err != nil {
		if err := run("mungekey", "--create", "--keyfile", "/etc/munge/munge.key"); err != nil {
			return err
		}
		run("chown", "munge:munge", "/etc/munge/munge.key")
	}
	for _, d := range []string{"/var/lib/slurm/slurmctld", "/var/lib/slurm/slurmd", "/var/log/slurm"} {
		os.MkdirAll(d, 0o755)
		run("chown", "slurm:slurm", d)
	}
	conf := fmt.Sprintf(`ClusterName=perflock
SlurmctldHost=%[1]s(%[2]s)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
ReturnToService=2
SlurmdTimeout=300
MessageTimeout=60
KillWait=5
NodeName=%[1]s NodeAddr=%[2]s CPUs=%[3]d State=UNKNOWN
PartitionName=main Nodes=%[1]s Default=YES MaxTime=INFINITE State=UP
`, slurmNode, slurmAddr, runtime.NumCPU())
	ex, err := slurm.Files.ReadFile("slurm.conf.example")
	if err != nil {
		return err
	}
	conf += string(ex) // the lines README tells a site to copy
	if err := os.WriteFile("/etc/slurm/slurm.conf", []byte(conf), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile("/etc/slurm/cgroup.conf", []byte("CgroupPlugin=cgroup/v2\n"), 0o644); err != nil {
		return err
	}
	// perflockd with the busy command: README's drop-in, with this
	// perflockd.
	dropIn, err := slurm.Files.ReadFile("perflockd.conf")
	if err != nil {
		return err
	}
	os.MkdirAll(filepath.Dir(slurmDropIn), 0o755)
	text := strings.ReplaceAll(string(dropIn), "/usr/bin/perflockd", filepath.Join(binDir, "perflockd"))
	if err := os.WriteFile(slurmDropIn, []byte(text), 0o644); err != nil {
		return err
	}
	for _, c := range [][]string{{"daemon-reload"}, {"restart", "perflockd.service"}, {"start", "munge"}, {"start", "slurmctld"}, {"start", "slurmd"}} {
		if err := run("systemctl", c...); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(slurmWait)
	for {
		st := nodeState()
		if st == "idle" {
			return nil
		}
		if time.Now().After(deadline) {
			out, _ := exec.Command("scontrol", "show", "node").CombinedOutput()
			return fmt.Errorf("the Slurm node is %q, not idle, after %v:\n%s", st, slurmWait, out)
		}
		time.Sleep(time.Second)
	}
}

// nodeState is sinfo's state of the node: idle, allocated, drained...
func nodeState() string {
	out, _ := exec.Command("sinfo", "-h", "-N", "-n", slurmNode, "-o", "%T").Output()
	return strings.TrimSpace(string(out))
}

// sbatch submits script as the second user with sbatch flags and returns
// the job id.
func (e *env) sbatch(script string, flags ...string) string {
	e.t.Helper()
	path := filepath.Join(e.dir, fmt.Sprintf("job-%d.sh", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		e.t.Fatal(err)
	}
	args := append([]string{"--reuid", secondUser, "--regid", secondUser, "--init-groups", "--", "sbatch", "--parsable",
		"-o", filepath.Join(e.dir, "slurm-%j.out"), "-D", e.dir}, flags...)
	out, err := exec.Command("setpriv", append(args, path)...).CombinedOutput()
	id := strings.TrimSpace(string(out))
	if _, nerr := strconv.Atoi(id); err != nil || nerr != nil {
		e.t.Fatalf("sbatch %s: %v: %s", strings.Join(flags, " "), err, out)
	}
	return id
}

// jobState is Slurm's state of job id: PENDING, RUNNING, COMPLETED...
func jobState(id string) string {
	out, _ := exec.Command("scontrol", "show", "job", "-o", id).Output()
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "JobState="); ok {
			return v
		}
	}
	return "?"
}

func (e *env) waitJob(id string, states ...string) {
	e.t.Helper()
	eventually(e.t, slurmWait, "Slurm job "+id+" in "+strings.Join(states, " or "), func() (string, bool) {
		s := jobState(id)
		for _, w := range states {
			if s == w {
				return s, true
			}
		}
		return s, false
	})
}

// waitFile waits for a file a job writes and returns its contents.
func (e *env) waitFile(name string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	return eventually(e.t, slurmWait, name+" to be written", func() (string, bool) {
		b, err := os.ReadFile(p)
		return strings.TrimSpace(string(b)), err == nil && len(b) > 0 && b[len(b)-1] == '\n'
	})
}

// stamp is a shell command writing the CLOCK_REALTIME seconds to NAME.
func (e *env) stamp(name string) string {
	return fmt.Sprintf("date +%%s.%%N > %s.tmp && mv %[1]s.tmp %[1]s", filepath.Join(e.dir, name))
}

func seconds(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("a time stamp %q: %v", s, err)
	}
	return f
}

// slurmEntry is the listing's row of Slurm job id, if any.
func (e *env) slurmEntry(id string) (user, state string, ok bool) {
	for _, x := range e.list() {
		if strings.Join(x.Command, " ") == "slurm job "+id {
			return x.User, x.State, true
		}
	}
	return "", "", false
}

// An sbatch --exclusive job takes the node's lease for its whole life: the
// pls side is frozen while it runs and thawed after, wholock lists it with
// its id and user, and a local perfrun started meanwhile starts after it
// ends.
func TestSystemdSlurmJobHoldsTheNodeAndFreezesPls(t *testing.T) {
	e := slurmEnv(t)
	for range 2 { // CPU hogs, as background work is
		e.start("pls", []string{"--socket", e.sock, "--", "sh", "-c", "while :; do :; done"})
	}
	eventually(t, settleTime, "two pls jobs running", func() (string, bool) {
		q := e.queue()
		return q, q == "while :; do :; done:running while :; do :; done:running"
	})
	id := e.sbatch(e.stamp("start")+"\nsystemctl show -p FreezerState --value perflock-shared.slice > "+filepath.Join(e.dir, "freezer")+
		"\nsleep 8\n"+e.stamp("end"), "--exclusive")
	e.waitFile("start")
	if user, state, ok := e.slurmEntry(id); !ok || user != secondUser || state != "running" {
		t.Fatalf("wholock lists Slurm job %s as %q %q (%v), want running for %s: %s", id, user, state, ok, secondUser, e.queue())
	}
	local := e.start("perfrun", []string{"--socket", e.sock, "--", "sh", "-c", e.stamp("local")})
	if code := e.exit(local); code != 0 {
		t.Fatalf("the local perfrun: exit %d: %s", code, local.stderr)
	}
	end, started := seconds(t, e.waitFile("end")), seconds(t, e.waitFile("local"))
	if started < end {
		t.Fatalf("the local perfrun started %.3fs before the Slurm job ended", end-started)
	}
	if got := e.waitFile("freezer"); got != "frozen" {
		t.Fatalf("perflock-shared.slice was %q while the Slurm job ran, want frozen", got)
	}
	e.waitJob(id, "COMPLETED")
	waitShow(t, "perflock-shared.slice", "FreezerState", "running")
	eventually(t, settleTime, "the Slurm job to leave the listing", func() (string, bool) {
		_, _, ok := e.slurmEntry(id)
		return e.queue(), !ok
	})
}

// A Slurm job submitted while a local perfrun runs starts after it ends:
// meanwhile the node is drained with a reason naming the local job, and it
// is back to idle after.
func TestSystemdSlurmJobWaitsForALocalPerfrunThatDrainsTheNode(t *testing.T) {
	e := slurmEnv(t)
	local := e.start("perfrun", []string{"--socket", e.sock, "--", "sh", "-c", e.stamp("lstart") + "; sleep 10; " + e.stamp("lend")})
	e.waitFile("lstart")
	node := eventually(t, slurmWait, "the node drained for the local job", func() (string, bool) {
		out, _ := exec.Command("scontrol", "show", "node", slurmNode).CombinedOutput()
		s := string(out)
		return s, strings.Contains(s, "DRAIN") && strings.Contains(s, "Reason=perflock: exclusive job x-")
	})
	t.Logf("while the local job runs:\n%s", node)
	id := e.sbatch(e.stamp("sstart"), "--exclusive")
	if code := e.exit(local); code != 0 {
		t.Fatalf("the local perfrun: exit %d: %s", code, local.stderr)
	}
	e.waitJob(id, "COMPLETED")
	if s, l := seconds(t, e.waitFile("sstart")), seconds(t, e.waitFile("lend")); s < l {
		t.Fatalf("the Slurm job started %.3fs before the local job ended", l-s)
	}
	eventually(t, slurmWait, "the node idle again", func() (string, bool) {
		st := nodeState()
		return st, st == "idle"
	})
}

// A Slurm job cancelled with scancel mid-run releases the node, and an
// administrator's drain is never lifted by perflock.
func TestSystemdScancelReleasesTheNodeAndAnAdminDrainStays(t *testing.T) {
	e := slurmEnv(t)
	id := e.sbatch(e.stamp("cstart")+"\nsleep 600", "--exclusive")
	e.waitFile("cstart")
	if _, state, ok := e.slurmEntry(id); !ok || state != "running" {
		t.Fatalf("wholock: %s", e.queue())
	}
	if out, err := exec.Command("scancel", id).CombinedOutput(); err != nil {
		t.Fatalf("scancel %s: %v: %s", id, err, out)
	}
	p := e.start("perfrun", []string{"--socket", e.sock, "-t", "3m", "--", "true"})
	if code := e.exit(p); code != 0 {
		t.Fatalf("perfrun after scancel: exit %d: %s", code, p.stderr)
	}
	if _, _, ok := e.slurmEntry(id); ok {
		t.Fatalf("the cancelled Slurm job is still listed: %s", e.queue())
	}
	eventually(t, slurmWait, "the node idle again", func() (string, bool) {
		st := nodeState()
		return st, st == "idle"
	})

	// An administrator drains the node: a local job neither replaces the
	// reason nor resumes the node after.
	if out, err := exec.Command("scontrol", "update", "nodename="+slurmNode, "state=drain", "reason=disk replaced").CombinedOutput(); err != nil {
		t.Fatalf("scontrol drain: %v: %s", err, out)
	}
	defer exec.Command("scontrol", "update", "nodename="+slurmNode, "state=resume").Run()
	p = e.start("perfrun", []string{"--socket", e.sock, "--", "sleep", "2"})
	if code := e.exit(p); code != 0 {
		t.Fatalf("perfrun on a drained node: exit %d: %s", code, p.stderr)
	}
	eventually(t, settleTime, "perflockd to have said busy and idle", func() (string, bool) {
		out, _ := exec.Command("journalctl", "-u", "perflockd.service", "--no-pager", "-o", "cat").CombinedOutput()
		s := string(out)
		return s, strings.Count(s, "busy command ran") >= 2 && strings.Contains(s, "drained already (disk replaced)")
	})
	out, _ := exec.Command("scontrol", "show", "node", slurmNode).CombinedOutput()
	if !strings.Contains(string(out), "Reason=disk replaced") || !strings.Contains(string(out), "DRAIN") {
		t.Fatalf("the administrator's drain did not stay:\n%s", out)
	}
}

// A Prolog that waits longer than PERFLOCK_SLURM_WAIT gives up: it fails
// saying why in slurmd's log, and Slurm takes the job off the node (it
// requeues it) and drains the node with "Prolog error".
func TestSystemdSlurmPrologGivesUpAfterItsWait(t *testing.T) {
	e := slurmEnv(t)
	if err := os.WriteFile("/etc/default/perflock-slurm", []byte("PERFLOCK_SLURM_WAIT=3s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove("/etc/default/perflock-slurm") })
	// Another bound lease holds the node, as a job of another scheduler
	// would: it does not drain the node, so Slurm sends its job here.
	path, dir := schedulerCgroup(t)
	holder := startIn(t, dir)
	e.bind(path)
	id := e.sbatch("true", "--exclusive")
	t.Cleanup(func() {
		holder.Process.Kill()
		exec.Command("scancel", id).Run()
		exec.Command("scontrol", "update", "nodename="+slurmNode, "state=resume").Run()
	})
	want := "job " + id + ": gave up after waiting 3s for the node's perflock lease"
	eventually(t, slurmWait, "slurmd's log to say why the Prolog failed", func() (string, bool) {
		b, _ := os.ReadFile("/var/log/slurm/slurmd.log")
		return string(b), strings.Contains(string(b), want)
	})
	eventually(t, slurmWait, "the node drained for the Prolog's failure", func() (string, bool) {
		out, _ := exec.Command("scontrol", "show", "node", slurmNode).CombinedOutput()
		return string(out), strings.Contains(string(out), "Reason=Prolog error")
	})
	if s := jobState(id); s == "RUNNING" || s == "COMPLETED" {
		t.Fatalf("Slurm job %s is %s although its Prolog gave up", id, s)
	}
}
