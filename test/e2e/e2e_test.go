package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/runner"
)

// The essay's example through the commands. Drain: A and B (pls) hold, C
// (perfrun) waits, A ends, D (pls) arrives and waits until C has held and
// released. Freeze: C freezes A and B and runs at once; D waits for C.
func TestEssayExampleThroughTheCommands(t *testing.T) {
	for _, driver := range drivers() {
		policies := []string{"drain"}
		if driver == "cgroupfs" {
			policies = append(policies, "freeze")
		}
		for _, policy := range policies {
			t.Run(driver+"/"+policy, func(t *testing.T) {
				e := newEnv(t, driver, policy)
				a := e.job("pls", "A", nil)
				e.started("A")
				b := e.job("pls", "B", nil)
				e.started("B")
				c := e.job("perfrun", "C", nil)
				if policy == "freeze" {
					e.started("C")
					e.waitQueue("A:frozen B:frozen C:running")
				} else {
					e.waitQueue("A:running B:running C:waiting")
				}
				if policy == "drain" {
					e.finish("A", 0)
					if code := e.exit(a); code != 0 {
						t.Fatalf("pls A exited %d", code)
					}
				}
				d := e.job("pls", "D", nil)
				if policy == "drain" {
					e.waitQueue("B:running C:waiting D:waiting")
					e.finish("B", 0)
					e.started("C")
					e.waitQueue("C:running D:waiting")
				} else {
					e.waitQueue("A:frozen B:frozen C:running D:waiting")
				}
				e.finish("C", 0)
				if code := e.exit(c); code != 0 {
					t.Fatalf("perfrun C exited %d: %s", code, c.stderr)
				}
				e.started("D")
				if !e.before("exit C", "start D") {
					t.Fatalf("D started before C ended: %v", e.eventList())
				}
				if policy == "freeze" {
					e.waitQueue("A:running B:running D:running")
					e.finish("A", 0)
					e.finish("B", 0)
					e.exit(a)
					e.exit(b)
				} else {
					e.exit(b)
				}
				e.finish("D", 0)
				e.exit(d)
				e.waitQueue("")
			})
		}
	}
}

// Under freeze, a running pls job really stops while perfrun runs: its
// cgroup reports frozen and the counter it keeps writing stops; it resumes
// after.
func TestFreezeStopsARunningPlsJobWhilePerfrunRuns(t *testing.T) {
	if !cgroupfsAvailable() {
		t.Skip("needs root and a writable cgroup2 tree (the cgroupfs driver)")
	}
	e := newEnv(t, "cgroupfs", "freeze")
	counter := filepath.Join(e.dir, "count")
	p := e.job("pls", "P", []string{"-v"}, envCount+"="+counter)
	e.started("P")
	read := func() int {
		b, _ := os.ReadFile(counter)
		n, _ := strconv.Atoi(string(b))
		return n
	}
	advances := func() bool {
		n := read()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if read() > n {
				return true
			}
			time.Sleep(5 * time.Millisecond)
		}
		return false
	}
	if !advances() {
		t.Fatal("the pls job's counter does not advance")
	}
	x := e.job("perfrun", "X", nil)
	e.started("X")
	entries := e.list()
	if len(entries) != 2 || entries[0].State != "frozen" || entries[1].State != "running" {
		t.Fatalf("queue while perfrun runs: %+v", entries)
	}
	mount, _ := cgroup.Mountpoint()
	events, err := os.ReadFile(filepath.Join(mount, entries[0].Where, "cgroup.events"))
	if err != nil || !strings.Contains(string(events), "frozen 1") {
		t.Fatalf("pls job's cgroup %s: %q %v", entries[0].Where, events, err)
	}
	n := read()
	time.Sleep(300 * time.Millisecond) // time in which a running job would count ~300 times
	if m := read(); m != n {
		t.Fatalf("counter advanced from %d to %d while frozen", n, m)
	}
	e.finish("X", 0)
	e.exit(x)
	if !advances() {
		t.Fatal("the pls job did not resume after perfrun")
	}
	e.finish("P", 0)
	e.exit(p)
	if !strings.Contains(p.stderr.String(), "frozen") {
		t.Errorf("pls -v did not report being frozen: %q", p.stderr)
	}
}

// An exclusive request amid a continuous stream of shared jobs (each 0.3 s,
// a new one every 0.1 s) gets in: under drain after the shared jobs already
// running end, before any later one; under freeze at once.
func TestExclusiveGetsInAmidAStreamOfSharedJobs(t *testing.T) {
	for _, driver := range drivers() {
		policies := []string{"drain"}
		if driver == "cgroupfs" {
			policies = append(policies, "freeze")
		}
		for _, policy := range policies {
			t.Run(driver+"/"+policy, func(t *testing.T) {
				e := newEnv(t, driver, policy)
				stop := make(chan struct{})
				spawned := make(chan int, 100)
				var count atomic.Int64
				go func() {
					defer close(spawned)
					tick := time.NewTicker(100 * time.Millisecond)
					defer tick.Stop()
					for i := 0; i < 60; i++ {
						select {
						case <-stop:
							return
						case <-tick.C:
						}
						e.job("pls", "S"+strconv.Itoa(i), nil, envHold+"=300ms")
						count.Add(1)
						spawned <- i
					}
				}()
				// Let the stream get going: three shared jobs running.
				for i := 0; i < 3; i++ {
					<-spawned
				}
				e.started("S2")
				queuedAt := time.Now()
				x := e.job("perfrun", "X", nil)
				// Shared jobs spawned from here on were requested after X.
				after := int(count.Load()) + 1
				e.started("X")
				waited := time.Since(queuedAt)
				close(stop)
				for range spawned {
				}
				t.Logf("%s/%s: the exclusive job waited %v amid the stream", driver, policy, waited)
				e.finish("X", 0)
				e.exit(x)
				// No shared job started while X ran.
				ev := e.eventList()
				inX := false
				for _, s := range ev {
					switch {
					case s == "start X":
						inX = true
					case s == "exit X":
						inX = false
					case inX && strings.HasPrefix(s, "start S"):
						t.Fatalf("%s while X held: %v", s, ev)
					}
				}
				// None requested after X started before X ended: no barging.
				for i := after; i < int(count.Load()); i++ {
					if e.before("start S"+strconv.Itoa(i), "exit X") {
						t.Fatalf("S%d, requested after X, started before X ended: %v", i, ev)
					}
				}
			})
		}
	}
}

// kill -9 of a waiting client removes its request.
func TestKilledWaitingClientLeavesTheQueue(t *testing.T) {
	e := newEnv(t, drivers()[0], "freeze")
	x := e.job("perfrun", "X", nil)
	e.started("X")
	y := e.job("perfrun", "Y", nil)
	e.waitQueue("X:running Y:waiting")
	y.cmd.Process.Signal(syscall.SIGKILL)
	e.exit(y)
	e.waitQueue("X:running")
	e.finish("X", 0)
	e.exit(x)
	e.waitQueue("")
}

// kill -9 of a holding perfrun keeps the lease until its job exits; then the
// next waiter starts.
func TestKilledHoldingPerfrunKeepsTheLeaseUntilItsJobExits(t *testing.T) {
	for _, driver := range drivers() {
		t.Run(driver, func(t *testing.T) {
			leaseOutlivesKilledPerfrun(t, newEnv(t, driver, "freeze"))
		})
	}
}

// leaseOutlivesKilledPerfrun kills, with SIGKILL, a holding perfrun that
// stays its job's parent (-v: its notices need one): the next waiter
// starts only once the killed one's job has exited. Then the same for a
// job run in place whose first process is killed while a process it
// started still runs.
func leaseOutlivesKilledPerfrun(t *testing.T, e *env) {
	x := e.job("perfrun", "X", []string{"-v"})
	e.started("X")
	y := e.job("perfrun", "Y", nil)
	e.waitQueue("X:running Y:waiting")
	x.cmd.Process.Signal(syscall.SIGKILL)
	e.exit(x)
	// The job X is still running (its cgroup or scope is populated, or, with
	// no cgroups, it holds the lease descriptor): the machine stays X's.
	e.waitQueue("X:running Y:waiting")
	if e.hasEvent("start Y") {
		t.Fatal("Y started while X's job still ran")
	}
	e.finish("X", 0)
	e.started("Y")

	// Z runs in place: perfrun's own process becomes "sh", which starts
	// the agent Z and waits. Killing sh leaves Z running, and holding.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	z := e.start("perfrun", []string{"--socket", e.sock, "--", "sh", "-c", `"$@" & wait`, "sh", self, "-test.run=^$", "Z"},
		envAgent+"="+filepath.Join(e.dir, "agents"), envName+"=Z")
	e.waitQueue("Y:running Z:waiting")
	e.finish("Y", 0)
	if code := e.exit(y); code != 0 {
		t.Fatalf("perfrun Y exited %d: %s", code, y.stderr)
	}
	e.started("Z")
	w := e.job("perfrun", "W", nil)
	e.waitQueue("Z:running W:waiting")
	z.cmd.Process.Signal(syscall.SIGKILL) // sh, in place of perfrun
	if code := e.exit(z); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("perfrun Z killed: exit %d, want %d (its job's own status)", code, 128+int(syscall.SIGKILL))
	}
	e.waitQueue("Z:running W:waiting")
	if e.hasEvent("start W") {
		t.Fatal("W started while a process of Z's job still ran")
	}
	e.finish("Z", 0)
	e.started("W")
	e.finish("W", 0)
	if code := e.exit(w); code != 0 {
		t.Fatalf("perfrun W exited %d: %s", code, w.stderr)
	}
	// Leave the daemon idle: in the systemd tier the next test shares it.
	e.waitQueue("")
}

// -n and -t give up with 75 (or -E's code) and leave the queue as it was.
func TestNonblockAndTimeoutExitWithConflictCode(t *testing.T) {
	e := newEnv(t, drivers()[0], "drain")
	x := e.job("perfrun", "X", nil)
	e.started("X")
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"-n", "--", "true"}, 75},
		{[]string{"-t", "0.2", "--", "true"}, 75},
		{[]string{"-n", "-E", "3", "--", "true"}, 3},
	} {
		for _, prog := range []string{"perfrun", "pls"} {
			p := e.start(prog, append([]string{"--socket", e.sock}, tc.args...))
			if code := e.exit(p); code != tc.want {
				t.Errorf("%s %v: exit %d, want %d; stderr %q", prog, tc.args, code, tc.want, p.stderr)
			}
		}
	}
	e.waitQueue("X:running")
	e.finish("X", 0)
	e.exit(x)
}

// The job's exit status comes back; a missing or unexecutable command is 127
// or 126; a job killed by a signal is 128+N.
func TestExitStatusesPassThrough(t *testing.T) {
	e := newEnv(t, drivers()[0], "freeze")
	notExec := filepath.Join(e.dir, "notexec")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	for _, tc := range []struct {
		prog string
		args []string
		want int
	}{
		{"perfrun", []string{"true"}, 0},
		{"perfrun", []string{"sh", "-c", "exit 7"}, 7},
		{"pls", []string{"sh", "-c", "exit 9"}, 9},
		{"perfrun", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
		{"perfrun", []string{"no-such-command-perflock"}, 127},
		{"perfrun", []string{notExec}, 126},
	} {
		p := e.start(tc.prog, append([]string{"--socket", e.sock, "--"}, tc.args...))
		if code := e.exit(p); code != tc.want {
			t.Errorf("%s %v: exit %d, want %d; stderr %q", tc.prog, tc.args, code, tc.want, p.stderr)
		}
	}
	e.waitQueue("")
}

// SIGINT while waiting cancels the request and exits 130; SIGTERM to a
// running perfrun reaches its job.
func TestSignalsCancelWaitingAndReachRunningJobs(t *testing.T) {
	e := newEnv(t, drivers()[0], "freeze")
	x := e.job("perfrun", "X", nil)
	e.started("X")
	y := e.job("perfrun", "Y", nil)
	e.waitQueue("X:running Y:waiting")
	y.cmd.Process.Signal(syscall.SIGINT)
	if code := e.exit(y); code != 130 {
		t.Fatalf("SIGINT while waiting: exit %d, want 130", code)
	}
	e.waitQueue("X:running")
	x.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.exit(x); code != 128+15 {
		t.Fatalf("SIGTERM to a running perfrun: exit %d, want 143 (the job died of it)", code)
	}
	e.waitQueue("")
}

// Two clients that find no daemon on the per-user socket start one between
// them.
func TestTwoClientsAutostartOneDaemon(t *testing.T) {
	e := newEnv(t, "", "")
	env := perUserEnv(t, e.dir)
	sock := filepath.Join(e.dir, "perflock", runner.SocketName)
	t.Cleanup(func() { killDaemonsOn(sock) })
	a := e.start("perfrun", []string{"--", "true"}, env...)
	b := e.start("pls", []string{"--", "true"}, env...)
	if ca, cb := e.exit(a), e.exit(b); ca != 0 || cb != 0 {
		t.Fatalf("exits %d, %d; stderr %q %q", ca, cb, a.stderr, b.stderr)
	}
	// Each client may have started a daemon: the one that lost the race for
	// the socket exits by itself, perhaps after both clients are done. Two
	// that both served would stay until their idle exit (60 s), past this
	// wait.
	eventually(t, 30*time.Second, "one daemon on the socket", func() (string, bool) {
		pids := daemonsOn(sock)
		return fmt.Sprintf("%d daemons %v", len(pids), pids), len(pids) == 1
	})
	// The next client uses the same daemon and starts none.
	w := e.start("wholock", nil, env...)
	if code := e.exit(w); code != 0 {
		t.Fatalf("wholock: %d %s", code, w.stderr)
	}
	if n := len(daemonsOn(sock)); n != 1 {
		t.Fatalf("%d daemons after wholock", n)
	}
}

// daemonsOn lists the pids of perflockd processes serving sock.
func daemonsOn(sock string) []int {
	var pids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if filepath.Base(args[0]) == "perflockd" && strings.Contains(string(b), sock) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killDaemonsOn stops the daemons serving sock and waits (up to 10 s) for
// them to exit, so that none writes its state into a folder the test's
// cleanup removes next.
func killDaemonsOn(sock string) {
	for _, pid := range daemonsOn(sock) {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	for deadline := time.Now().Add(10 * time.Second); len(daemonsOn(sock)) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

// Garbage on the socket gets an error or a close; the daemon serves on.
func TestGarbageOnTheSocketDoesNotStopTheDaemon(t *testing.T) {
	e := newEnv(t, drivers()[0], "freeze")
	for _, junk := range []string{"\x00\x01\x02\n", "{\"type\":\"hello\",\"version\":1}\n{\"type\":\"place\",\"pid\":1}\n", strings.Repeat("x", 100000)} {
		c, err := net.Dial("unix", e.sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(junk))
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		c.Read(buf) // an error message or a close; either way it returns
		c.Close()
	}
	p := e.start("perfrun", []string{"--socket", e.sock, "--", "sh", "-c", "exit 4"})
	if code := e.exit(p); code != 4 {
		t.Fatalf("perfrun after garbage: exit %d: %s", code, p.stderr)
	}
	if e.daemon.ProcessState != nil {
		t.Fatal("daemon exited")
	}
}

// --max-runtime stops a job that runs too long: SIGTERM reaches it, and the
// next waiter gets the machine.
func TestMaxRuntimeStopsTheJob(t *testing.T) {
	for _, driver := range drivers() {
		t.Run(driver, func(t *testing.T) {
			e := newEnv(t, driver, "freeze")
			x := e.job("perfrun", "X", []string{"--max-runtime", "0.3"})
			e.started("X")
			y := e.job("perfrun", "Y", nil)
			if code := e.exit(x); code != 128+15 {
				t.Fatalf("perfrun --max-runtime: exit %d, want 143 (stopped by SIGTERM): %s", code, x.stderr)
			}
			e.started("Y")
			e.finish("Y", 0)
			e.exit(y)
		})
	}
}

// perfrun runs its job in place: the job is perfrun's own process (its pid),
// placed in the job's cgroup, with the lease on descriptor 5 and
// PERFLOCK_JOB set; with -o it keeps a parent and the job has no lease
// descriptor.
func TestJobRunsInPlaceOfPerfrun(t *testing.T) {
	for _, driver := range drivers() {
		t.Run(driver, func(t *testing.T) {
			e := newEnv(t, driver, "freeze")
			script := `echo "$$ $PERFLOCK_JOB $(readlink /proc/self/fd/5 | cut -d: -f1)"; grep '^0::' /proc/self/cgroup`
			for _, tc := range []struct {
				flags   []string
				env     string
				inPlace bool
			}{
				{nil, "", true},
				{[]string{"-o"}, "", false},
				// Inside a job (an unknown one here): a parent stays, so
				// an outer job run in place would not lose its lease.
				{nil, runner.EnvJob + "=x-999999", false},
			} {
				cmd := exec.Command(filepath.Join(binDir, "perfrun"), append(append([]string{"--socket", e.sock}, tc.flags...), "--", "sh", "-c", script)...)
				cmd.Env = append(os.Environ(), tc.env)
				var out bytes.Buffer
				cmd.Stdout = &out
				if err := cmd.Run(); err != nil {
					t.Fatalf("perfrun %v: %v", tc.flags, err)
				}
				var pid int
				var job, lease string
				fmt.Sscanf(out.String(), "%d %s %s", &pid, &job, &lease)
				if (pid == cmd.Process.Pid) != tc.inPlace || !strings.HasPrefix(job, "x-") {
					t.Errorf("perfrun %v: job pid %d, perfrun's %d, PERFLOCK_JOB %q; in place: %v", tc.flags, pid, cmd.Process.Pid, job, tc.inPlace)
				}
				if (lease == "socket") != (tc.flags == nil) { // -o keeps it from the job
					t.Errorf("perfrun %v: descriptor 5 is %q", tc.flags, lease)
				}
				if driver == "cgroupfs" && !strings.Contains(out.String(), "/exclusive/"+job) {
					t.Errorf("perfrun %v: the job is not in its cgroup: %s", tc.flags, out.String())
				}
			}
			e.waitQueue("")
		})
	}
}
