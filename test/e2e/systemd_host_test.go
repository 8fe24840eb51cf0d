package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// perflockd takes the socket systemd passes: systemd-socket-activate holds
// the listening socket and starts perflockd on the first connection.
func TestSocketActivatedDaemonServesTheFirstClient(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian: systemd)")
	}
	e := newEnv(t, "", "")
	act := exec.Command(activate, "-l", e.sock, filepath.Join(binDir, "perflockd"), "--driver", "none")
	log := &syncBuffer{}
	act.Stderr = log
	if err := act.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		act.Process.Signal(syscall.SIGTERM)
		act.Wait()
		if t.Failed() {
			t.Logf("activator and daemon log:\n%s", log)
		}
	})
	e.waitFor("the activator's socket", func() bool { _, err := os.Stat(e.sock); return err == nil })
	if n := len(daemonsOn(e.sock)); n != 0 {
		t.Fatalf("%d daemons before any client", n)
	}
	p := e.start("perfrun", []string{"--socket", e.sock, "--", "sh", "-c", "exit 5"})
	if code := e.exit(p); code != 5 {
		t.Fatalf("perfrun through an activated daemon: exit %d: %s", code, p.stderr)
	}
	if !strings.Contains(log.String(), "perflockd serving") {
		t.Fatalf("no daemon was activated:\n%s", log)
	}
}

// perflockd tells the service manager it is ready and what the queue holds.
func TestDaemonNotifiesReadinessAndQueueStatus(t *testing.T) {
	e := newEnv(t, "", "")
	nsock := filepath.Join(e.dir, "notify")
	nl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	d := exec.Command(filepath.Join(binDir, "perflockd"), "--socket", e.sock, "--driver", "none")
	d.Env = append(os.Environ(), "NOTIFY_SOCKET="+nsock)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Signal(syscall.SIGTERM); d.Wait() })
	next := func() string {
		buf := make([]byte, 4096)
		nl.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := nl.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	if m := next(); !strings.Contains(m, "READY=1") {
		t.Fatalf("first notification %q, want READY=1", m)
	}
	x := e.job("perfrun", "X", nil)
	e.started("X")
	for {
		m := next()
		if strings.HasPrefix(m, "STATUS=1 exclusive running (") && strings.Contains(m, "X, ") {
			break
		}
	}
	e.finish("X", 0)
	e.exit(x)
	for m := next(); m != "STATUS=idle"; m = next() {
	}
}

// perflockd install writes the units with ExecStart pointing at the daemon.
func TestInstallWritesUnitsForTheGivenBinary(t *testing.T) {
	e := newEnv(t, "", "")
	root := filepath.Join(e.dir, "root")
	p := e.start("perflockd", []string{"install", "--root", root, "--bin", "/opt/pl/bin/perflockd"})
	if code := e.exit(p); code != 0 {
		t.Fatalf("perflockd install: exit %d: %s", code, p.stderr)
	}
	dir := filepath.Join(root, "etc/systemd/system")
	for _, u := range []string{"perflockd.service", "perflockd.socket", "perflock.slice", "perflock-exclusive.slice", "perflock-shared.slice"} {
		b, err := os.ReadFile(filepath.Join(dir, u))
		if err != nil {
			t.Fatal(err)
		}
		if u == "perflockd.service" && !strings.Contains(string(b), "ExecStart=/opt/pl/bin/perflockd ") {
			t.Errorf("perflockd.service does not run the given binary:\n%s", b)
		}
		if u == "perflockd.socket" && !strings.Contains(string(b), "ListenStream=/run/perflock/perflock.sock") {
			t.Errorf("perflockd.socket:\n%s", b)
		}
	}
}
