package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/perflock/perflock/runner"
)

// Finding the daemon, and starting one where that is the commands' part:
// only on the per-user default socket.

// A socket named with --socket or PERFLOCK_SOCKET where no daemon listens
// is an error (69) that says so; no daemon is started there: that is only
// for the per-user default socket.
func TestExplicitSocketWithoutDaemonIsNotStarted(t *testing.T) {
	e := newEnv(t, "", "")
	t.Cleanup(func() { killDaemonsOn(e.sock) })
	for _, c := range []struct {
		name string
		args []string
		env  string
	}{
		{"--socket", []string{"--socket", e.sock}, ""},
		{"PERFLOCK_SOCKET", nil, runner.EnvSocket + "=" + e.sock},
	} {
		for _, prog := range []string{"perfrun", "pls", "wholock"} {
			args := c.args
			if prog != "wholock" {
				args = append(append([]string(nil), args...), "--", "true")
			}
			p := e.start(prog, args, c.env)
			if code := e.exit(p); code != 69 || !strings.Contains(p.stderr.String(), "no perflockd listens at "+e.sock) ||
				!strings.Contains(p.stderr.String(), "perflockd --socket "+e.sock) {
				t.Errorf("%s with %s and no daemon: exit %d, want 69 and a message saying no daemon listens and how to start one: %s",
					prog, c.name, code, p.stderr)
			}
			if n := len(daemonsOn(e.sock)); n != 0 {
				t.Fatalf("%s with %s started %d daemons on %s", prog, c.name, n, e.sock)
			}
		}
	}
}

// perUserEnv is the environment of a client that finds its per-user daemon
// under runtime (as XDG_RUNTIME_DIR): no PERFLOCK_SOCKET. It skips where a
// system daemon's socket exists, which the commands would use instead.
func perUserEnv(t *testing.T, runtime string) []string {
	t.Helper()
	if _, err := os.Stat(runner.SystemSocket); err == nil {
		t.Skipf("%s exists: the commands would use the system daemon", runner.SystemSocket)
	}
	return []string{"XDG_RUNTIME_DIR=" + runtime, runner.EnvSocket + "="}
}
