package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stopAndRestart stops perflockd with sig (SIGTERM: a clean stop; SIGKILL:
// a crash) and starts it again on the same socket and state.
func (e *env) stopAndRestart(sig syscall.Signal) {
	e.daemon.Process.Signal(sig)
	e.daemon.Wait()
	fmt.Fprintf(e.dlog, "--- perflockd stopped with %v and restarted ---\n", sig)
	e.runDaemon()
}

var restarts = []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}

// A job that holds only a named lock keeps excluding others across a
// restart of perflockd, clean or not, until it ends: it is adopted by its
// process, from its record.
func TestNamedLocksExcludeAcrossARestart(t *testing.T) {
	for _, driver := range drivers() {
		for _, sig := range restarts {
			t.Run(driver+"/"+sig.String(), func(t *testing.T) {
				e := newEnv(t, driver, "freeze")
				a := e.job("perfrun", "A", []string{"-L", "bk"})
				e.started("A")
				e.stopAndRestart(sig)
				e.waitQueue("A:running")
				b := e.start("perfrun", []string{"--socket", e.sock, "-n", "-L", "bk", "--", "true"})
				if code := e.exit(b); code != 75 {
					t.Fatalf("perfrun -n -L bk while the adopted A holds bk: exit %d, want 75 (busy): %s", code, b.stderr)
				}
				e.finish("A", 0)
				if code := e.exit(a); code != 0 {
					t.Fatalf("A: exit %d: %s", code, a.stderr)
				}
				e.waitQueue("")
				c := e.start("perfrun", []string{"--socket", e.sock, "-n", "-L", "bk", "--", "true"})
				if code := e.exit(c); code != 0 {
					t.Fatalf("perfrun -n -L bk after A: exit %d: %s", code, c.stderr)
				}
			})
		}
	}
}

// A job's runtime limit, its own (--max-runtime) or the daemon's
// (--max-exclusive-runtime), holds across a restart: the job is stopped
// when it is due, counted from its start.
func TestRuntimeLimitsHoldAcrossARestart(t *testing.T) {
	for _, driver := range drivers() {
		for _, limit := range []string{"own", "daemon's"} {
			t.Run(driver+"/"+limit, func(t *testing.T) {
				var e *env
				var flags []string
				if limit == "own" {
					e = newEnv(t, driver, "freeze")
					flags = []string{"--max-runtime", "2s"}
				} else {
					e = newEnvWith(t, driver, "freeze", "--max-exclusive-runtime", "2s")
				}
				x := e.job("perfrun", "X", flags)
				e.started("X")
				e.stopAndRestart(syscall.SIGKILL)
				if code := e.exit(x); code != 128+15 {
					t.Fatalf("X after the restart: exit %d, want 143 (stopped at its limit): %s", code, x.stderr)
				}
				e.waitQueue("")
				if !strings.Contains(e.dlog.String(), "max runtime reached") {
					t.Errorf("the restarted daemon did not say it stopped the job:\n%s", e.dlog)
				}
			})
		}
	}
}

// A job started inside a job that holds what it asks for would wait for
// itself: pls -- perfrun, perfrun -- perfrun. It is refused at once (exit
// 69, saying why) and nothing is left behind: later jobs run.
func TestAJobThatWouldWaitForItsOwnJobIsRefused(t *testing.T) {
	for _, driver := range drivers() {
		t.Run(driver, func(t *testing.T) {
			e := newEnv(t, driver, "freeze")
			inner := []string{binDir + "/perfrun", "--socket", e.sock, "--", "true"}
			for _, outer := range []string{"pls", "perfrun"} {
				p := e.start(outer, append([]string{"--socket", e.sock, "--"}, inner...))
				if code := e.exit(p); code != 69 || !strings.Contains(p.stderr.String(), "would wait for itself") {
					t.Fatalf("%s -- perfrun: exit %d, want 69 saying it would wait for itself: %s", outer, code, p.stderr)
				}
			}
			if driver == "cgroupfs" {
				// Its cgroup says where it runs, whatever its environment.
				p := e.start("pls", append([]string{"--socket", e.sock, "--", "env", "-u", "PERFLOCK_JOB"}, inner...))
				if code := e.exit(p); code != 69 {
					t.Fatalf("pls -- env -u PERFLOCK_JOB perfrun: exit %d, want 69: %s", code, p.stderr)
				}
			}
			// What may run beside its job does.
			p := e.start("pls", []string{"--socket", e.sock, "--", binDir + "/pls", "--socket", e.sock, "--", "true"})
			if code := e.exit(p); code != 0 {
				t.Fatalf("pls -- pls: exit %d: %s", code, p.stderr)
			}
			q := e.start("perfrun", []string{"--socket", e.sock, "--", binDir + "/perfrun", "--socket", e.sock, "-L", "other", "--", "true"})
			if code := e.exit(q); code != 0 {
				t.Fatalf("perfrun -- perfrun -L other: exit %d: %s", code, q.stderr)
			}
			e.waitQueue("")
			r := e.start("perfrun", []string{"--socket", e.sock, "--", "true"})
			if code := e.exit(r); code != 0 {
				t.Fatalf("perfrun after the refusals: exit %d: %s", code, r.stderr)
			}
		})
	}
}

// A perflockd whose socket file was removed cannot be reached: it stops
// (exit 69, saying why) rather than serve nobody, and its running job is
// adopted by the next one.
func TestDaemonStopsWhenItsSocketIsRemoved(t *testing.T) {
	e := newEnv(t, drivers()[0], "freeze")
	x := e.job("perfrun", "X", []string{"-L", "bk"})
	e.started("X")
	if err := os.Remove(e.sock); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- e.daemon.Wait() }()
	select {
	case err := <-exited:
		if code := exitCode(err); code != 69 || !strings.Contains(e.dlog.String(), "socket file was removed") {
			t.Fatalf("perflockd after its socket was removed: exit %d, want 69 saying why:\n%s", code, e.dlog)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("perflockd serves on with its socket file removed")
	}
	e.runDaemon()
	e.waitQueue("X:running")
	e.finish("X", 0)
	if code := e.exit(x); code != 0 {
		t.Fatalf("X: exit %d: %s", code, x.stderr)
	}
}
