package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perflock/perflock/runner"
)

// -L: named resources are locks of their own, apart from the machine; a job
// that does not hold the machine gets no cgroup.
func TestNamedResourcesAreLocksOfTheirOwn(t *testing.T) {
	for _, driver := range drivers() {
		t.Run(driver, func(t *testing.T) {
			e := newEnv(t, driver, "freeze")
			a := e.job("perfrun", "A", []string{"-L", "backup"})
			e.started("A")
			x := e.job("perfrun", "X", nil) // the machine: A is not in its way
			e.started("X")
			b := e.job("perfrun", "B", []string{"-L", "backup"})
			c := e.job("perfrun", "C", []string{"-L", "other", "-L", "net"})
			e.started("C")
			e.waitQueue("A:running X:running C:running B:waiting")
			for _, ent := range e.list() {
				name := ent.Command[len(ent.Command)-1]
				wantWhere := driver == "cgroupfs" && name == "X"
				if (ent.Where != "") != wantWhere {
					t.Errorf("%s (resources %v) placed in %q", name, ent.Resources, ent.Where)
				}
			}
			e.finish("A", 0)
			if code := e.exit(a); code != 0 {
				t.Fatalf("perfrun -L backup A exited %d: %s", code, a.stderr)
			}
			e.started("B")
			for _, n := range []string{"B", "C", "X"} {
				e.finish(n, 0)
			}
			for _, p := range []*proc{b, c, x} {
				if code := e.exit(p); code != 0 {
					t.Errorf("%v exited %d: %s", p.cmd.Args, code, p.stderr)
				}
			}
			e.waitQueue("")
		})
	}
}

// A pls job that holds a named lock besides the machine is not frozen: an
// exclusive job waits for it; a pls job of a named lock alone is not in
// the machine's way at all.
func TestPlsWithNamedResourcesIsNotFrozen(t *testing.T) {
	if !cgroupfsAvailable() {
		t.Skip("needs root and a writable cgroup2 tree (the cgroupfs driver)")
	}
	e := newEnv(t, "cgroupfs", "freeze")
	p := e.job("pls", "P", []string{"-L", "cpu", "-L", "net"})
	e.started("P")
	s := e.job("pls", "S", []string{"-L", "scratch"})
	e.started("S")
	x := e.job("perfrun", "X", nil)
	e.waitQueue("P:running S:running X:waiting")
	e.finish("P", 0)
	e.exit(p)
	e.started("X")
	e.waitQueue("S:running X:running")
	e.finish("X", 0)
	e.finish("S", 0)
	e.exit(x)
	e.exit(s)
}

// --group: jobs of one group run together and a new member joins at once,
// past an exclusive waiter (Lustre's jump); other jobs wait for the group.
// pls --group is a usage error.
func TestGroupJobsRunTogether(t *testing.T) {
	e := newEnv(t, drivers()[0], "freeze")
	g1 := e.job("perfrun", "G1", []string{"--group", "7"})
	e.started("G1")
	g2 := e.job("perfrun", "G2", []string{"--group", "7"})
	e.started("G2")
	x := e.job("perfrun", "X", nil)
	e.waitQueue("G1:running G2:running X:waiting")
	g3 := e.job("perfrun", "G3", []string{"--group", "7"})
	e.started("G3")
	h := e.job("perfrun", "H", []string{"--group", "8"})
	e.waitQueue("G1:running G2:running G3:running X:waiting H:waiting")
	if ents := e.list(); ents[0].Mode != "group(7)" {
		t.Errorf("mode %q, want group(7)", ents[0].Mode)
	}
	for _, n := range []string{"G1", "G2", "G3"} {
		e.finish(n, 0)
	}
	for _, p := range []*proc{g1, g2, g3} {
		if code := e.exit(p); code != 0 {
			t.Errorf("%v exited %d: %s", p.cmd.Args, code, p.stderr)
		}
	}
	e.started("X")
	e.waitQueue("X:running H:waiting")
	e.finish("X", 0)
	e.exit(x)
	e.started("H")
	e.finish("H", 0)
	e.exit(h)

	pls := e.start("pls", []string{"--socket", e.sock, "--group", "7", "--", "true"})
	if code := e.exit(pls); code != runner.ExitUsage || !strings.Contains(pls.stderr.String(), "--group") {
		t.Errorf("pls --group: exit %d, want %d; stderr %q", code, runner.ExitUsage, pls.stderr)
	}
}

// -w is -t, as in flock(1).
func TestWaitFlagIsTimeout(t *testing.T) {
	e := newEnv(t, drivers()[0], "freeze")
	x := e.job("perfrun", "X", nil)
	e.started("X")
	for _, args := range [][]string{{"-w", "0.2"}, {"-w", "200ms", "-E", "3"}} {
		p := e.start("perfrun", append(append([]string{"--socket", e.sock}, args...), "--", "true"))
		want := 75
		if len(args) > 2 {
			want = 3
		}
		if code := e.exit(p); code != want || !strings.Contains(p.stderr.String(), "timed out") {
			t.Errorf("perfrun %v: exit %d, want %d; stderr %q", args, code, want, p.stderr)
		}
	}
	e.waitQueue("X:running")
	e.finish("X", 0)
	e.exit(x)
}

// perflockd --max-exclusive-runtime stops exclusive and group jobs, even
// those that asked for longer.
func TestMaxExclusiveRuntimeCapsExclusiveJobs(t *testing.T) {
	e := newEnvWith(t, drivers()[0], "freeze", "--max-exclusive-runtime", "300ms")
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"X", nil},
		{"Y", []string{"--max-runtime", "1h"}},
		{"G", []string{"--group", "3"}},
	} {
		p := e.job("perfrun", tc.name, tc.flags)
		e.started(tc.name)
		if code := e.exit(p); code != 128+15 {
			t.Fatalf("perfrun %v: exit %d, want 143 (stopped by SIGTERM): %s", tc.flags, code, p.stderr)
		}
	}
}

// --if-elapsed skips a job whose key last completed successfully recently,
// with exit 0 and a message (none with -q); failures are not recorded; the
// history survives a daemon restart.
func TestIfElapsedSkipsRecentlyCompletedJobs(t *testing.T) {
	e := newEnv(t, drivers()[0], "freeze")
	// perfrun sends the job's status (which the history records) and hangs
	// up without waiting for the daemon: the next run is sure to see the
	// history only once the daemon has ended the lease, which comes after.
	run := func(want int, args ...string) *proc {
		t.Helper()
		p := e.start("perfrun", append([]string{"--socket", e.sock}, args...))
		if code := e.exit(p); code != want {
			t.Fatalf("perfrun %v: exit %d, want %d; stderr %q", args, code, want, p.stderr)
		}
		e.waitQueue("")
		return p
	}
	a := e.job("perfrun", "A", []string{"--key", "nightly", "--if-elapsed", "1h"})
	e.started("A")
	e.finish("A", 0)
	if code := e.exit(a); code != 0 {
		t.Fatalf("first run: exit %d: %s", code, a.stderr)
	}
	e.waitQueue("")
	// The job would exit 7 if it ran.
	p := run(0, "--key", "nightly", "--if-elapsed", "1h", "--", "sh", "-c", "exit 7")
	if got := p.stderr.String(); !strings.Contains(got, "perfrun: skipped: nightly last completed successfully ") || !strings.Contains(got, "(--if-elapsed 1h)") {
		t.Errorf("skip message %q", got)
	}
	if p := run(0, "-q", "--key", "nightly", "--if-elapsed", "1h", "--", "sh", "-c", "exit 7"); p.stderr.String() != "" {
		t.Errorf("-q: stderr %q", p.stderr)
	}
	run(7, "--key", "nightly", "--if-elapsed", "1ms", "--", "sh", "-c", "exit 7") // long enough ago
	run(7, "--key", "other", "--if-elapsed", "1h", "--", "sh", "-c", "exit 7")    // another key
	run(7, "--key", "other", "--if-elapsed", "1h", "--", "sh", "-c", "exit 7")    // failures do not count
	// The default key is the command line's hash.
	run(0, "--if-elapsed", "1h", "--", "true")
	p = run(0, "--if-elapsed", "1h", "--", "true")
	if key := runner.CommandKey([]string{"true"}); !strings.Contains(p.stderr.String(), "skipped: "+key+" ") {
		t.Errorf("default key %s: stderr %q", key, p.stderr)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "history.json")); err != nil {
		t.Errorf("history beside the socket: %v", err)
	}
	e.restartDaemon()
	run(0, "--key", "nightly", "--if-elapsed", "1h", "--", "sh", "-c", "exit 7")
}

// --replace: the newest instance of a key wins over an older running one
// (stopped) or waiting one (cancelled).
func TestReplaceStopsOrCancelsOlderJobsOfTheKey(t *testing.T) {
	e := newEnv(t, drivers()[0], "freeze")
	a := e.job("perfrun", "A", []string{"--key", "sync", "--replace"})
	e.started("A")
	b := e.job("perfrun", "B", []string{"--key", "sync", "--replace"})
	if code := e.exit(a); code != 128+15 || !strings.Contains(a.stderr.String(), "replaced") {
		t.Fatalf("replaced running job: exit %d, want 143; stderr %q", code, a.stderr)
	}
	e.started("B")
	// B holds the machine: W1 waits, then W2 replaces it in line.
	w1 := e.job("perfrun", "W1", []string{"--key", "w", "--replace"})
	e.waitQueue("B:running W1:waiting")
	w2 := e.job("perfrun", "W2", []string{"--key", "w", "--replace"})
	if code := e.exit(w1); code != 75 || !strings.Contains(w1.stderr.String(), "replaced") {
		t.Fatalf("replaced waiting job: exit %d, want 75; stderr %q", code, w1.stderr)
	}
	e.waitQueue("B:running W2:waiting")
	e.finish("B", 0)
	e.exit(b)
	e.started("W2")
	e.finish("W2", 0)
	if code := e.exit(w2); code != 0 {
		t.Fatalf("W2 exited %d: %s", code, w2.stderr)
	}
}

// --expire-after stops a job of the same key that has held longer, and
// leaves a younger one alone.
func TestExpireAfterStopsAHungHolder(t *testing.T) {
	e := newEnv(t, drivers()[0], "freeze")
	a := e.job("perfrun", "A", []string{"--key", "backup"})
	e.started("A")
	b := e.job("perfrun", "B", []string{"--key", "backup", "--expire-after", "1h"})
	e.waitQueue("A:running B:waiting")
	b.cmd.Process.Signal(os.Interrupt)
	e.exit(b)
	e.waitQueue("A:running")
	c := e.job("perfrun", "C", []string{"--key", "backup", "--expire-after", "1ms"})
	if code := e.exit(a); code != 128+15 || !strings.Contains(a.stderr.String(), "expired") {
		t.Fatalf("expired job: exit %d, want 143; stderr %q", code, a.stderr)
	}
	e.started("C")
	e.finish("C", 0)
	if code := e.exit(c); code != 0 {
		t.Fatalf("C exited %d: %s", code, c.stderr)
	}
}
