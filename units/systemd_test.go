package units

// Tests against a real systemd (the "systemd tier"). They need root on a host
// booted with systemd on cgroup v2 and run only with PERFLOCK_TEST_SYSTEMD=1;
// `make test-systemd` runs them inside QEMU guests (see test/vm/README.md).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const tierSlice = "perflock-tiertest.slice"

// counterEnv makes the test binary act as a counting child: it increments a
// counter every few milliseconds and publishes it (atomically, by rename) in
// the file the variable names.
const counterEnv = "PERFLOCK_TIERTEST_COUNTER"

func TestMain(m *testing.M) {
	if path := os.Getenv(counterEnv); path != "" {
		runCounter(path)
		return
	}
	os.Exit(m.Run())
}

func runCounter(path string) {
	tmp := path + ".tmp"
	for i := 1; ; i++ {
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(i)), 0o644); err != nil {
			os.Exit(3)
		}
		if err := os.Rename(tmp, path); err != nil {
			os.Exit(3)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func requireSystemd(t *testing.T) {
	t.Helper()
	if os.Getenv("PERFLOCK_TEST_SYSTEMD") != "1" {
		t.Skip("systemd tier: needs root on a real systemd host with cgroup v2; set PERFLOCK_TEST_SYSTEMD=1 (`make test-systemd` runs it in QEMU guests)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("PERFLOCK_TEST_SYSTEMD=1 but not root")
	}
}

// tierCtx gives each test a generous deadline: under emulation a single
// systemd job takes hundreds of milliseconds.
func tierCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, ctx context.Context) *Conn {
	t.Helper()
	c, err := Connect(ctx)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// startChild starts cmd and registers cleanup that kills it.
func startChild(t *testing.T, cmd *exec.Cmd) uint32 {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // SIGKILL reaches frozen tasks too
		_ = cmd.Wait()
	})
	return uint32(cmd.Process.Pid)
}

// scopeIn puts pid into a fresh scope in tierSlice and registers cleanup that
// thaws the slice (systemd ≥256 refuses to stop frozen units) and stops both.
// Cleanups run last-in first-out, so this runs before the child is killed.
func scopeIn(t *testing.T, ctx context.Context, c *Conn, pid uint32) string {
	t.Helper()
	scope := fmt.Sprintf("perflock-tiertest-%d.scope", pid)
	if err := c.StartScope(ctx, scope, tierSlice, []uint32{pid}); err != nil {
		t.Fatalf("StartScope: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Thaw(cctx, tierSlice); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := c.Stop(cctx, scope); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := c.Stop(cctx, tierSlice); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return scope
}

func cgroupOf(t *testing.T, pid uint32) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	t.Fatalf("/proc/%d/cgroup has no cgroup v2 line:\n%s", pid, b)
	return ""
}

// cgroupFrozen reads "frozen" from the cgroup.events file of cgroup path cg.
func cgroupFrozen(t *testing.T, cg string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", cg, "cgroup.events"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "frozen "); ok {
			return v == "1"
		}
	}
	t.Fatalf("%s/cgroup.events has no frozen line:\n%s", cg, b)
	return false
}

func wantFreezer(t *testing.T, ctx context.Context, c *Conn, unit string, want ...string) {
	t.Helper()
	got, err := c.FreezerState(ctx, unit)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		if got == w {
			return
		}
	}
	t.Errorf("FreezerState(%s) = %q, want one of %q", unit, got, want)
}

func TestScopeFreezeThaw(t *testing.T) {
	requireSystemd(t)
	ctx := tierCtx(t)
	c := connect(t, ctx)
	if out, err := exec.Command("systemctl", "--version").Output(); err == nil {
		t.Logf("%s", bytes.SplitN(out, []byte("\n"), 2)[0])
	}

	pid := startChild(t, exec.Command("sleep", "600"))
	scope := scopeIn(t, ctx, c, pid)

	// systemd lists the scope as running.
	out, err := exec.CommandContext(ctx, "systemctl", "list-units", "--no-legend", "--plain", "--all", scope).CombinedOutput()
	if err != nil {
		t.Fatalf("systemctl list-units: %v\n%s", err, out)
	}
	if f := strings.Fields(string(out)); len(f) < 4 || f[0] != scope || f[2] != "active" || f[3] != "running" {
		t.Errorf("systemctl list-units %s:\n%s\nwant %s loaded active running", scope, out, scope)
	}

	// The child sits in the scope's cgroup, below the slice's.
	scopeCG, err := c.ControlGroup(ctx, scope)
	if err != nil {
		t.Fatal(err)
	}
	sliceCG, err := c.ControlGroup(ctx, tierSlice)
	if err != nil {
		t.Fatal(err)
	}
	if want := sliceCG + "/" + scope; scopeCG != want {
		t.Errorf("ControlGroup(%s) = %q, want %q", scope, scopeCG, want)
	}
	if !strings.HasPrefix(sliceCG, "/perflock.slice/") {
		t.Errorf("ControlGroup(%s) = %q, want it under /perflock.slice/", tierSlice, sliceCG)
	}
	if got := cgroupOf(t, pid); got != scopeCG {
		t.Errorf("child %d is in cgroup %q, want %q", pid, got, scopeCG)
	}

	// A second scope of the same name is refused with an error naming it,
	// even after StartScope's reset-failed retry.
	err = c.StartScope(ctx, scope, tierSlice, []uint32{pid})
	if dbusErrorName(err) != errUnitExists || !strings.Contains(err.Error(), scope) {
		t.Errorf("StartScope of an active scope: err = %v, want a wrapped %s naming %s", err, errUnitExists, scope)
	}

	wantFreezer(t, ctx, c, tierSlice, FreezerRunning)

	// Freeze the slice: the slice is frozen, and so is everything below it.
	if err := c.Freeze(ctx, tierSlice); err != nil {
		t.Fatal(err)
	}
	wantFreezer(t, ctx, c, tierSlice, FreezerFrozen)
	// systemd ≥256 reports children of a frozen slice as frozen-by-parent.
	wantFreezer(t, ctx, c, scope, FreezerFrozen, FreezerFrozenByParent)
	if !cgroupFrozen(t, sliceCG) || !cgroupFrozen(t, scopeCG) {
		t.Errorf("after Freeze: cgroup.events frozen = %v (slice), %v (scope), want 1",
			cgroupFrozen(t, sliceCG), cgroupFrozen(t, scopeCG))
	}

	// Thaw it again.
	if err := c.Thaw(ctx, tierSlice); err != nil {
		t.Fatal(err)
	}
	wantFreezer(t, ctx, c, tierSlice, FreezerRunning)
	wantFreezer(t, ctx, c, scope, FreezerRunning)
	if cgroupFrozen(t, sliceCG) || cgroupFrozen(t, scopeCG) {
		t.Errorf("after Thaw: cgroup still frozen")
	}
}

func readCounter(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatalf("counter file: %v", err)
	}
	return n
}

// waitCounter waits until the counter in path exceeds n and returns it.
func waitCounter(t *testing.T, ctx context.Context, path string, n int) int {
	t.Helper()
	for {
		if b, err := os.ReadFile(path); err == nil {
			if v, err := strconv.Atoi(string(b)); err == nil && v > n {
				return v
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("counter did not pass %d: %v", n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestFrozenProcessMakesNoProgress(t *testing.T) {
	requireSystemd(t)
	ctx := tierCtx(t)
	c := connect(t, ctx)

	path := filepath.Join(t.TempDir(), "counter")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), counterEnv+"="+path)
	pid := startChild(t, cmd)
	scopeIn(t, ctx, c, pid)

	v := waitCounter(t, ctx, path, 0)
	v = waitCounter(t, ctx, path, v) // advancing inside the scope

	if err := c.Freeze(ctx, tierSlice); err != nil {
		t.Fatal(err)
	}
	frozenAt := readCounter(t, path)
	time.Sleep(time.Second)
	if got := readCounter(t, path); got != frozenAt {
		t.Errorf("counter advanced from %d to %d while its slice was frozen", frozenAt, got)
	}

	if err := c.Thaw(ctx, tierSlice); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, ctx, path, frozenAt) // and advances again once thawed
}

// TestErrorsNameUnit checks that failures name the unit they concern.
func TestErrorsNameUnit(t *testing.T) {
	requireSystemd(t)
	ctx := tierCtx(t)
	c := connect(t, ctx)
	const unit = "perflock-tiertest-nonexistent.scope"
	if err := c.Freeze(ctx, unit); err == nil || !strings.Contains(err.Error(), unit) {
		t.Errorf("Freeze(%s) = %v, want an error naming the unit", unit, err)
	}
	if err := c.Thaw(ctx, unit); err == nil || !strings.Contains(err.Error(), unit) {
		t.Errorf("Thaw(%s) = %v, want an error naming the unit", unit, err)
	}
}
