package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/proto"
)

// burnAndReport is an agent's envBurn: burn CPU in this process, measured by
// the process's own CPU clock, not by wall time. For a duration it writes
// the CPU time burned, in nanoseconds, to NAME.cpu beside the agent socket
// and reports "burned NAME"; "forever" burns until the agent is told to
// exit.
func burnAndReport(c io.Writer, name, spec string) {
	if spec == "forever" {
		go burn(-1)
		return
	}
	d, err := time.ParseDuration(spec)
	if err != nil {
		os.Exit(96)
	}
	used := burn(d)
	out := filepath.Join(filepath.Dir(os.Getenv(envAgent)), name+".cpu")
	if err := os.WriteFile(out, []byte(strconv.FormatInt(int64(used), 10)), 0o644); err != nil {
		os.Exit(95)
	}
	fmt.Fprintf(c, "burned %s\n", name)
}

// burn spins until this process has used d more CPU time (never for d < 0)
// and returns the CPU time used meanwhile.
func burn(d time.Duration) time.Duration {
	t0 := processCPU()
	x := uint64(1)
	for {
		for i := 0; i < 100000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if used := processCPU() - t0; d >= 0 && used >= d && x != 0 {
			return used
		}
	}
}

func processCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		os.Exit(94)
	}
	return time.Duration(ts.Nano())
}

// burned is the CPU time job name reported burning.
func (e *env) burned(name string) time.Duration {
	e.t.Helper()
	e.waitEvent("burned " + name)
	b, err := os.ReadFile(filepath.Join(e.dir, name+".cpu"))
	if err != nil {
		e.t.Fatal(err)
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		e.t.Fatal(err)
	}
	return time.Duration(n)
}

// reportOf is the JSON report perfrun --report=json printed: the last line
// of its stderr.
func reportOf(t *testing.T, p *proc) proto.Report {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	var r proto.Report
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("no JSON report on the last line of stderr: %v\n%s", err, p.stderr)
	}
	return r
}

func needCgroupfs(t *testing.T) {
	if !cgroupfsAvailable() {
		t.Skip("needs root and a writable cgroup2 tree (the cgroupfs driver)")
	}
}

// A job that burns a known amount of CPU (by its own CPU clock) is reported
// with at least that much job CPU; the report does not change the exit
// status; the text report has its heading and lines.
func TestReportCountsTheJobsOwnCPUTime(t *testing.T) {
	needCgroupfs(t)
	e := newEnv(t, "cgroupfs", "freeze")
	x := e.job("perfrun", "X", []string{"--report=json"}, envBurn+"=300ms")
	used := e.burned("X")
	e.finish("X", 3)
	if code := e.exit(x); code != 3 {
		t.Fatalf("perfrun --report=json: exit %d, want the job's 3: %s", code, x.stderr)
	}
	r := reportOf(t, x)
	t.Logf("burned %v; report %+v job_cpu %+v", used, r, r.JobCPU)
	if r.JobCPU == nil {
		t.Fatalf("no job CPU: %v", r.Unavailable)
	}
	if got := time.Duration(r.JobCPU.TotalUS) * time.Microsecond; got < used {
		t.Fatalf("job CPU %v < the %v the job burned", got, used)
	}
	if u := time.Duration(r.JobCPU.UserUS+r.JobCPU.SystemUS) * time.Microsecond; u < used-10*time.Millisecond {
		t.Errorf("user+system %v < the %v burned", u, used)
	}
	if !strings.HasPrefix(r.Job, "x-") || r.Driver != "cgroupfs" || r.Policy != "freeze" || r.WallUS <= 0 || r.OnlineCPUs < 1 || r.MachineBusyUS == nil || r.Outside == nil {
		t.Errorf("report %+v", r)
	}
	if !strings.HasSuffix(r.JobCgroup, "/exclusive/"+r.Job) {
		t.Errorf("job figures from %q, want the job's own cgroup", r.JobCgroup)
	}
	if (r.Throttling == nil) == (r.Unavailable["throttling"] == "") {
		t.Errorf("throttling %+v and its reason %q: want exactly one", r.Throttling, r.Unavailable["throttling"])
	}
	if (r.Pressure == nil) == (r.Unavailable["pressure"] == "") {
		t.Errorf("pressure %+v and its reason %q: want exactly one", r.Pressure, r.Unavailable["pressure"])
	}

	y := e.job("perfrun", "Y", []string{"--report"})
	e.started("Y")
	e.finish("Y", 0)
	if code := e.exit(y); code != 0 {
		t.Fatalf("perfrun --report: exit %d: %s", code, y.stderr)
	}
	out := y.stderr.String()
	for _, want := range []string{"perfrun: report for x-", "\n  wall time ", "\n  job CPU ", "\n  outside the job ", "\n  shared jobs "} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
}

// A pls job that burns CPU, frozen under the freeze policy while perfrun
// runs: the report says one shared job was frozen, it used no CPU, and so
// stayed frozen throughout.
func TestReportShowsFrozenSharedJobsStayedFrozen(t *testing.T) {
	needCgroupfs(t)
	e := newEnv(t, "cgroupfs", "freeze")
	p := e.job("pls", "P", nil, envBurn+"=forever")
	e.started("P")
	x := e.job("perfrun", "X", []string{"--report=json"}, envBurn+"=200ms")
	e.burned("X")
	e.finish("X", 0)
	if code := e.exit(x); code != 0 {
		t.Fatalf("perfrun: exit %d: %s", code, x.stderr)
	}
	r := reportOf(t, x)
	if r.Shared == nil || r.Shared.FrozenJobs != 1 || r.Shared.CPUUS != 0 || !r.Shared.FrozenThroughout {
		t.Fatalf("shared %+v (unavailable %v), want 1 frozen, 0 CPU, frozen throughout", r.Shared, r.Unavailable)
	}
	e.finish("P", 0)
	e.exit(p)
}

// A CPU hog started outside perflock, running throughout the job, shows up
// as CPU used outside the job: on 2 or more CPUs, at least 30 % of the job's
// wall time (it gets most of a CPU; a busier machine only adds to it).
func TestReportCountsCPUUsedOutsideTheJob(t *testing.T) {
	needCgroupfs(t)
	e := newEnv(t, "cgroupfs", "freeze")
	hog := exec.Command("sh", "-c", "while :; do :; done")
	if err := hog.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hog.Process.Kill(); hog.Wait() })
	x := e.job("perfrun", "X", []string{"--report=json"}, envBurn+"=500ms")
	e.burned("X")
	e.finish("X", 0)
	if code := e.exit(x); code != 0 {
		t.Fatalf("perfrun: exit %d: %s", code, x.stderr)
	}
	r := reportOf(t, x)
	if r.Outside == nil || r.MachineBusyUS == nil {
		t.Fatalf("no outside figure: %v", r.Unavailable)
	}
	t.Logf("wall %dus, job %+v, machine busy %dus, outside %+v", r.WallUS, r.JobCPU, *r.MachineBusyUS, *r.Outside)
	if r.Outside.CPUUS < r.WallUS*3/10 {
		t.Fatalf("outside CPU %dus < 30%% of the wall time %dus with a hog running throughout", r.Outside.CPUUS, r.WallUS)
	}
	if r.Outside.Share <= 0 || r.Outside.Share > 1 {
		t.Errorf("outside share %v", r.Outside.Share)
	}
}

// The shared cgroup thawed by hand while perfrun runs (as an operator
// might): the report says the shared jobs did not stay frozen, and their CPU.
func TestReportSeesSharedJobsThawedByHand(t *testing.T) {
	needCgroupfs(t)
	e := newEnv(t, "cgroupfs", "freeze")
	counter := filepath.Join(e.dir, "count")
	p := e.job("pls", "P", nil, envCount+"="+counter)
	e.started("P")
	x := e.job("perfrun", "X", []string{"--report=json"})
	e.started("X")
	e.waitQueue("P:frozen X:running")
	mount, err := cgroup.Mountpoint()
	if err != nil {
		t.Fatal(err)
	}
	read := func() int {
		b, _ := os.ReadFile(counter)
		n, _ := strconv.Atoi(string(b))
		return n
	}
	n := read()
	if err := os.WriteFile(filepath.Join(mount, e.cgName, "shared", "cgroup.freeze"), []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the thawed pls job to count", func() bool { return read() > n })
	e.finish("X", 0)
	if code := e.exit(x); code != 0 {
		t.Fatalf("perfrun: exit %d: %s", code, x.stderr)
	}
	r := reportOf(t, x)
	if r.Shared == nil || r.Shared.FrozenJobs != 1 || r.Shared.CPUUS <= 0 || r.Shared.FrozenThroughout {
		t.Fatalf("shared %+v (unavailable %v), want 1 frozen at the start, CPU > 0, not frozen throughout", r.Shared, r.Unavailable)
	}
	e.finish("P", 0)
	e.exit(p)
}

// With the none driver there is no cgroup: the report gives the wall and
// machine figures and says which others are unavailable, and why.
func TestReportWithTheNoneDriverSaysWhatIsUnavailable(t *testing.T) {
	e := newEnv(t, "none", "drain")
	x := e.job("perfrun", "X", []string{"--report=json"})
	e.started("X")
	e.finish("X", 0)
	if code := e.exit(x); code != 0 {
		t.Fatalf("perfrun: exit %d: %s", code, x.stderr)
	}
	r := reportOf(t, x)
	if r.Driver != "none" || r.WallUS <= 0 || r.MachineBusyUS == nil || r.JobCPU != nil || r.Outside != nil || r.Pressure != nil || r.Throttling != nil || r.Shared != nil {
		t.Fatalf("report %+v", r)
	}
	for _, k := range []string{"job_cpu", "outside", "pressure", "throttling", "shared"} {
		if r.Unavailable[k] == "" {
			t.Errorf("unavailable[%s] is empty: %v", k, r.Unavailable)
		}
	}
}

// --report-file writes the JSON report to the file, not to stderr; pls
// refuses --report (exit 64).
func TestReportFileGetsTheJSONReport(t *testing.T) {
	driver := drivers()[0]
	e := newEnv(t, driver, "drain")
	file := filepath.Join(e.dir, "run.json")
	x := e.job("perfrun", "X", []string{"--report-file", file})
	e.started("X")
	e.finish("X", 0)
	if code := e.exit(x); code != 0 {
		t.Fatalf("perfrun: exit %d: %s", code, x.stderr)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var r proto.Report
	if err := json.Unmarshal(b, &r); err != nil || !strings.HasPrefix(r.Job, "x-") || r.Driver != driver || r.WallUS <= 0 {
		t.Fatalf("report file %q: %+v, %v", b, r, err)
	}
	if strings.Contains(x.stderr.String(), `"job"`) || strings.Contains(x.stderr.String(), "report for") {
		t.Errorf("the report went to stderr too: %s", x.stderr)
	}
	p := e.start("pls", []string{"--socket", e.sock, "--report", "--", "true"})
	if code := e.exit(p); code != 64 || !strings.Contains(p.stderr.String(), "perfrun") {
		t.Fatalf("pls --report: exit %d, want 64: %s", code, p.stderr)
	}
}
