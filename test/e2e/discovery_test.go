package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// A user without a home (nobody, useradd -M) gets a per-user daemon: it
// keeps its state beside its socket, saying so once in its log.
func TestPerUserDaemonForAUserWithoutAHome(t *testing.T) {
	requireSecondUser(t)
	e := newEnv(t, "", "")
	e.openForOthers()
	runtime := filepath.Join(e.dir, "runtime")
	if err := os.Mkdir(runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", secondUser+":", runtime).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	sock := filepath.Join(runtime, "perflock", runner.SocketName)
	t.Cleanup(func() { killDaemonsOn(sock) })
	env := append(perUserEnv(t, runtime), "HOME=/nonexistent", "XDG_STATE_HOME=")
	for i := range 2 {
		p := e.startPath("setpriv", []string{"--reuid", secondUser, "--regid", secondUser, "--clear-groups", "--",
			filepath.Join(binDir, "perfrun"), "--", "sh", "-c", "exit 6"}, env...)
		if code := e.exit(p); code != 6 {
			log, _ := os.ReadFile(filepath.Join(filepath.Dir(sock), runner.LogName))
			t.Fatalf("perfrun %d as %s with HOME=/nonexistent: exit %d, want 6: %s\nperflockd log:\n%s", i+1, secondUser, code, p.stderr, log)
		}
	}
	log, err := os.ReadFile(filepath.Join(filepath.Dir(sock), runner.LogName))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "level=WARN msg=\"cannot make the state directory"); n != 1 || !strings.Contains(string(log), filepath.Dir(sock)) {
		t.Fatalf("perflockd log: %d warnings about the state directory, want 1 naming %s:\n%s", n, filepath.Dir(sock), log)
	}
}

// An autostarted daemon that fails at once is reported at once, with the
// reason from its log, not after the client has waited for it to listen.
func TestAutostartedDaemonThatFailsIsReportedAtOnce(t *testing.T) {
	e := newEnv(t, "", "")
	runtime, sock := e.runtimeDir()
	// A file where the socket goes: connect(2) is refused, and the daemon
	// refuses to replace what is not a socket.
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killDaemonsOn(sock) })
	start := time.Now()
	p := e.start("perfrun", []string{"--", "true"}, perUserEnv(t, runtime)...)
	code := e.exit(p)
	if code != 69 || !strings.Contains(p.stderr.String(), "exists and is not a socket") {
		t.Fatalf("perfrun whose daemon cannot listen: exit %d, want 69 and the daemon's reason: %s", code, p.stderr)
	}
	// The client gave up waiting for the daemon to listen after 5 s; it
	// must not have waited for that.
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("perfrun took %v to report a daemon that failed at once", d)
	}
}

// The commands do not carry the daemon: they start the perflockd program
// beside them, else the one in PATH, and say what to do when there is none.
func TestAutostartFindsPerflockdBesideTheCommandOrSaysItIsMissing(t *testing.T) {
	e := newEnv(t, "", "")
	runtime, sock := e.runtimeDir()
	t.Cleanup(func() { killDaemonsOn(sock) })
	alone := filepath.Join(e.dir, "alone")
	os.Mkdir(alone, 0o755)
	b, err := os.ReadFile(filepath.Join(binDir, "perfrun"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(alone, "perfrun"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(perUserEnv(t, runtime), "PATH=/usr/bin:/bin")
	p := e.startPath(filepath.Join(alone, "perfrun"), []string{"--", "true"}, env...)
	if code := e.exit(p); code != 69 || !strings.Contains(p.stderr.String(), "no perflockd program in "+alone+" or in PATH") {
		t.Fatalf("perfrun without a perflockd: exit %d, want 69 and what is missing: %s", code, p.stderr)
	}
	// The same perfrun finds the perflockd in PATH.
	p = e.startPath(filepath.Join(alone, "perfrun"), []string{"--", "true"}, append(env[:len(env)-1], "PATH="+binDir+":/usr/bin:/bin")...)
	if code := e.exit(p); code != 0 {
		t.Fatalf("perfrun with perflockd in PATH: exit %d: %s", code, p.stderr)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("no per-user daemon started: %v", err)
	}
}

// runtimeDir makes an XDG_RUNTIME_DIR of the env's own with its perflock
// folder (0700), and names the per-user socket there.
func (e *env) runtimeDir() (runtime, sock string) {
	e.t.Helper()
	runtime = filepath.Join(e.dir, "runtime")
	if err := os.MkdirAll(filepath.Join(runtime, "perflock"), 0o700); err != nil {
		e.t.Fatal(err)
	}
	os.Chmod(runtime, 0o700)
	return runtime, filepath.Join(runtime, "perflock", runner.SocketName)
}
