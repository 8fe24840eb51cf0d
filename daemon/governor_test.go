package daemon

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perflock/perflock/internal/cpufreqtest"
	"github.com/perflock/perflock/proto"
)

const pinnedPerformance = "performance 800000-" + cpufreqtest.HWMax

// cpufreqDaemon runs a daemon on a fake cpufreq tree of two CPUs; it
// returns the socket and the tree.
func cpufreqDaemon(t *testing.T) (string, *cpufreqtest.Tree) {
	t.Helper()
	tree := cpufreqtest.New(t, filepath.Join(t.TempDir(), "cpu"), 2, "")
	return startDaemon(t, Config{CpufreqRoot: tree.Root}), tree
}

// placeChild starts a child of this process (the client) and has the
// daemon place it; it returns the child and the daemon's answer.
func placeChild(t *testing.T, c *client) (*exec.Cmd, proto.Msg) {
	t.Helper()
	child := exec.Command("sleep", "1000")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	c.send(proto.Msg{Type: proto.TPlace, PID: child.Process.Pid})
	m := c.recv()
	for m.Type == proto.TWaiting {
		m = c.recv()
	}
	return child, m
}

// waitSettings polls the fake tree until both CPUs read want: the daemon
// restores the settings off its loop once a lease has ended, with no
// message to a client to wait for.
func waitSettings(t *testing.T, tree *cpufreqtest.Tree, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for tree.All(2) != want {
		if time.Now().After(deadline) {
			t.Fatalf("cpufreq settings %q, want %q", tree.All(2), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitGone polls until path is gone.
func waitGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for exists(path) {
		if time.Now().After(deadline) {
			t.Fatalf("%s left", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stateFile(sock string) string { return filepath.Join(filepath.Dir(sock), "governor.json") }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// An exclusive job with a governor is placed only once the frequency is
// pinned; the settings come back, and the state file goes, when its lease
// ends.
func TestGovernorPinsWhileTheJobRuns(t *testing.T) {
	for _, tc := range []struct{ governor, pinned, listed string }{
		{"performance", pinnedPerformance, "performance"},
		{"50", "performance 1750000-1750000", "50%"},
	} {
		t.Run(tc.governor, func(t *testing.T) {
			sock, tree := cpufreqDaemon(t)
			c := acquire(t, sock, proto.Msg{Mode: "exclusive", Governor: tc.governor})
			c.expect(proto.TGranted)
			tree.WantAll(2, cpufreqtest.Original) // not before the job is placed
			child, m := placeChild(t, c)
			if m.Type != proto.TPlaced {
				t.Fatalf("place: %+v", m)
			}
			tree.WantAll(2, tc.pinned)
			if !exists(stateFile(sock)) {
				t.Error("no state file while pinned")
			}
			if es := list(t, sock); len(es) != 1 || es[0].Governor != tc.listed {
				t.Errorf("listing %+v, want governor %q", es, tc.listed)
			}
			child.Process.Kill()
			child.Wait()
			c.nc.Close()
			waitList(t, sock, "")
			waitSettings(t, tree, cpufreqtest.Original)
			waitGone(t, stateFile(sock)) // removed after the settings are written back
		})
	}
}

// Bad governors are invalid, and a machine without cpufreq is unavailable:
// either way the request fails at once, without waiting behind the holder.
func TestGovernorRefusedBeforeWaiting(t *testing.T) {
	sock, _ := cpufreqDaemon(t)
	empty := startDaemon(t, Config{CpufreqRoot: cpufreqtest.New(t, filepath.Join(t.TempDir(), "cpu"), 0, "").Root})
	for _, s := range []string{sock, empty} {
		holder := acquire(t, s, proto.Msg{Mode: "exclusive"})
		holder.expect(proto.TGranted)
	}
	for _, tc := range []struct {
		sock string
		req  proto.Msg
		code string
		says string
	}{
		{sock, proto.Msg{Mode: "exclusive", Governor: "fast"}, proto.CodeInvalid, `--governor "fast"`},
		{sock, proto.Msg{Mode: "exclusive", Governor: "0"}, proto.CodeInvalid, "percentage from 1 to 100"},
		{sock, proto.Msg{Mode: "shared", Governor: "performance"}, proto.CodeInvalid, "shared jobs never pin"},
		{sock, proto.Msg{Mode: "exclusive", Governor: "70%", Resources: []string{"net"}}, proto.CodeInvalid, "must hold the machine"},
		{empty, proto.Msg{Mode: "exclusive", Governor: "performance"}, proto.CodeUnavailable, "cpufreq is not available on this machine"},
		{empty, proto.Msg{Mode: "group(3)", Governor: "70"}, proto.CodeUnavailable, "run without --governor"},
	} {
		c := acquire(t, tc.sock, tc.req)
		m := c.recv()
		if m.Type != proto.TError || m.Code != tc.code || !strings.Contains(m.Message, tc.says) {
			t.Errorf("acquire %+v: %+v, want error %s saying %q", tc.req, m, tc.code, tc.says)
		}
	}
	waitList(t, sock, "1:granted")
	waitList(t, empty, "1:granted")
	// none asks for nothing: it waits its turn as usual.
	c := acquire(t, empty, proto.Msg{Mode: "exclusive", Governor: "none"})
	c.expect(proto.TQueued)
}

// When the pin cannot be set at the job's turn, the job is not placed:
// its client hears why, and nothing is left pinned.
func TestGovernorFailureKeepsTheJobFromRunning(t *testing.T) {
	sock, tree := cpufreqDaemon(t)
	c := acquire(t, sock, proto.Msg{Mode: "exclusive", Governor: "performance"})
	c.expect(proto.TGranted)
	// cpu1's governor breaks between the check at acquire and the pin.
	os.Remove(tree.Path(1, "scaling_governor"))
	os.Mkdir(tree.Path(1, "scaling_governor"), 0o755)
	_, m := placeChild(t, c)
	if m.Type != proto.TError || m.Code != proto.CodeUnavailable || !strings.Contains(m.Message, "did not run") || !strings.Contains(m.Message, "scaling_governor") {
		t.Fatalf("place with a broken cpufreq: %+v", m)
	}
	if got := tree.Settings(0); got != cpufreqtest.Original {
		t.Errorf("cpu0: %s, want %s", got, cpufreqtest.Original)
	}
	if exists(stateFile(sock)) {
		t.Error("state file left by a failed pin")
	}
	waitList(t, sock, "")
}

// Group jobs share one pin: the first pins, the last to end restores; a
// member asking for another mode is refused, one without a governor runs
// under the pin.
func TestGovernorIsSharedByAGroup(t *testing.T) {
	sock, tree := cpufreqDaemon(t)
	join := func(gov string) (*client, *exec.Cmd, proto.Msg) {
		c := acquire(t, sock, proto.Msg{Mode: "group(7)", Governor: gov})
		c.expect(proto.TGranted)
		child, m := placeChild(t, c)
		return c, child, m
	}
	a, ac, m := join("performance")
	if m.Type != proto.TPlaced {
		t.Fatalf("first member: %+v", m)
	}
	b, bc, m := join("performance")
	if m.Type != proto.TPlaced {
		t.Fatalf("second member: %+v", m)
	}
	_, _, m = join("50%")
	if m.Type != proto.TError || m.Code != proto.CodeUnavailable || !strings.Contains(m.Message, "pinned at performance for job x-1, x-2") {
		t.Fatalf("member with another mode: %+v", m)
	}
	d, dc, m := join("")
	if m.Type != proto.TPlaced {
		t.Fatalf("member without a governor: %+v", m)
	}
	waitList(t, sock, "1:running 2:running 4:running")
	for _, x := range []struct {
		c     *client
		child *exec.Cmd
		left  string
	}{{a, ac, "2:running 4:running"}, {d, dc, "2:running"}} {
		x.child.Process.Kill()
		x.child.Wait()
		x.c.nc.Close()
		waitList(t, sock, x.left)
		tree.WantAll(2, pinnedPerformance)
	}
	bc.Process.Kill()
	bc.Wait()
	b.nc.Close()
	waitList(t, sock, "")
	waitSettings(t, tree, cpufreqtest.Original)
}

// An exclusive job without a governor that follows a pinned one starts
// only after the settings are restored, and a job asking for another mode
// gets it.
func TestGovernorNextJobsSeeTheirOwnSettings(t *testing.T) {
	sock, tree := cpufreqDaemon(t)
	a := acquire(t, sock, proto.Msg{Mode: "exclusive", Governor: "performance"})
	a.expect(proto.TGranted)
	ac, _ := placeChild(t, a)
	b := acquire(t, sock, proto.Msg{Mode: "exclusive", Governor: "25"})
	b.expect(proto.TQueued)
	c := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	c.expect(proto.TQueued)
	tree.WantAll(2, pinnedPerformance)
	ac.Process.Kill()
	ac.Wait()
	a.nc.Close()
	b.expect(proto.TGranted)
	bc, m := placeChild(t, b)
	if m.Type != proto.TPlaced {
		t.Fatalf("second job: %+v", m)
	}
	tree.WantAll(2, "performance 875000-875000")
	bc.Process.Kill()
	bc.Wait()
	b.nc.Close()
	c.expect(proto.TGranted)
	if _, m := placeChild(t, c); m.Type != proto.TPlaced {
		t.Fatalf("third job: %+v", m)
	}
	tree.WantAll(2, cpufreqtest.Original)
}
