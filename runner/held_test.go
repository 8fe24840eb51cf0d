package runner

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// startTestHeld starts the test binary as a held child of path argv.
func startTestHeld(t *testing.T, path string, argv []string, lease *os.File) *heldChild {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h, err := startHeld(self, path, argv, nil, false, nil, os.Stdout, os.Stderr, lease)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func waitStatus(t *testing.T, h *heldChild) int {
	t.Helper()
	err := h.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return ExitStatus(h.cmd.ProcessState.Sys().(syscall.WaitStatus))
}

func lookSh(t *testing.T) string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	return sh
}

func TestHeldChildRunsCommandOnGo(t *testing.T) {
	h := startTestHeld(t, lookSh(t), []string{"sh", "-c", "exit 3"}, nil)
	if msg := h.release(); msg != "" {
		t.Fatalf("exec error %q", msg)
	}
	if got := waitStatus(t, h); got != 3 {
		t.Fatalf("status %d, want 3", got)
	}
}

func TestHeldChildExitsWithoutRunningWhenParentGivesUp(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	h := startTestHeld(t, lookSh(t), []string{"sh", "-c", "touch " + marker}, nil)
	h.goW.Close() // EOF instead of 'g'
	h.errR.Close()
	if got := waitStatus(t, h); got != 1 {
		t.Fatalf("status %d, want 1", got)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran without the go-ahead")
	}
}

func TestHeldChildReportsMissingCommand(t *testing.T) {
	h := startTestHeld(t, filepath.Join(t.TempDir(), "missing"), []string{"missing"}, nil)
	msg := h.release()
	if !strings.Contains(msg, "no such file") {
		t.Errorf("exec error %q, want ENOENT's text", msg)
	}
	if got := waitStatus(t, h); got != ExitNotFound {
		t.Fatalf("status %d, want %d", got, ExitNotFound)
	}
}

func TestHeldChildReportsNonExecutable(t *testing.T) {
	f := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(f, []byte("not a program\x00\x01"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := startTestHeld(t, f, []string{"script"}, nil)
	if msg := h.release(); msg == "" {
		t.Error("no exec error")
	}
	if got := waitStatus(t, h); got != ExitCannotExec {
		t.Fatalf("status %d, want %d", got, ExitCannotExec)
	}
}

func TestHeldChildHandsOnlyTheLeaseToTheCommand(t *testing.T) {
	lease, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Close()
	defer w.Close()
	// The command sees descriptor 5 (the lease) but not 3 and 4.
	h := startTestHeld(t, lookSh(t), []string{"sh", "-c", "[ -e /proc/$$/fd/5 ] && ! [ -e /proc/$$/fd/3 ] && ! [ -e /proc/$$/fd/4 ]"}, lease)
	if msg := h.release(); msg != "" {
		t.Fatalf("exec error %q", msg)
	}
	if got := waitStatus(t, h); got != 0 {
		t.Fatalf("status %d: descriptors not as expected", got)
	}
}

func TestResolveCommandBeforeQueuing(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		want int
	}{
		{"sh", 0},
		{"perflock-no-such-command", ExitNotFound},
		{filepath.Join(dir, "missing"), ExitNotFound},
		{dir, ExitCannotExec},
		{noexec, ExitCannotExec},
	} {
		path, code, err := resolveCommand(c.name)
		if code != c.want || (c.want == 0) != (err == nil) || (c.want == 0) != (path != "") {
			t.Errorf("resolveCommand(%q) = %q, %d, %v; want status %d", c.name, path, code, err, c.want)
		}
	}
}

// heldLayout runs `cat /proc/self/personality /proc/self/maps` as a held
// job and returns cat's persona and its memory map.
func heldLayout(t *testing.T, noASLR bool) (uint64, string) {
	t.Helper()
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(t.TempDir(), "layout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	h, err := startHeld(self, cat, []string{"cat", "/proc/self/personality", "/proc/self/maps"}, nil, noASLR, nil, out, os.Stderr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if msg := h.release(); msg != "" {
		t.Fatalf("held child: %s", msg)
	}
	if got := waitStatus(t, h); got != 0 {
		t.Fatalf("cat exited %d", got)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	first, maps, _ := strings.Cut(string(b), "\n")
	persona, err := strconv.ParseUint(strings.TrimSpace(first), 16, 32)
	if err != nil {
		t.Fatalf("persona %q: %v", first, err)
	}
	return persona, maps
}

// randomizes reports whether the kernel randomizes address spaces at all
// (randomize_va_space is not 0).
func randomizes(t *testing.T) bool {
	b, err := os.ReadFile("/proc/sys/kernel/randomize_va_space")
	return err == nil && strings.TrimSpace(string(b)) != "0"
}

func TestHeldChildWithNoASLRGivesTheJobTheSameAddressesEveryRun(t *testing.T) {
	if err := CheckNoASLR(); err != nil {
		t.Skipf("this kernel or sandbox refuses: %v", err)
	}
	p1, maps1 := heldLayout(t, true)
	p2, maps2 := heldLayout(t, true)
	if p1&addrNoRandomize == 0 || p2&addrNoRandomize == 0 {
		t.Fatalf("personas %#x and %#x lack ADDR_NO_RANDOMIZE (%#x)", p1, p2, addrNoRandomize)
	}
	if maps1 != maps2 {
		t.Errorf("two runs have different layouts:\n%s\nand\n%s", maps1, maps2)
	}
	if !strings.Contains(maps1, "[stack]") {
		t.Errorf("no stack in the map:\n%s", maps1)
	}
}

func TestHeldChildLeavesASLRAloneByDefault(t *testing.T) {
	p1, maps1 := heldLayout(t, false)
	p2, maps2 := heldLayout(t, false)
	if p1&addrNoRandomize != 0 || p2&addrNoRandomize != 0 {
		t.Fatalf("personas %#x and %#x have ADDR_NO_RANDOMIZE", p1, p2)
	}
	if randomizes(t) && maps1 == maps2 {
		t.Errorf("randomize_va_space is on, yet two runs share one layout:\n%s", maps1)
	}
}

func TestCheckNoASLRLeavesThisProcessAndItsChildrenAlone(t *testing.T) {
	before, err := os.ReadFile("/proc/sys/kernel/randomize_va_space")
	if err != nil {
		t.Skip(err)
	}
	if err := CheckNoASLR(); err != nil {
		t.Skipf("this kernel or sandbox refuses: %v", err)
	}
	// Whichever thread starts it, a command started now has the persona
	// this process had.
	for range 4 {
		out, err := exec.Command("cat", "/proc/self/personality").Output()
		if err != nil {
			t.Skip(err)
		}
		if p, _ := strconv.ParseUint(strings.TrimSpace(string(out)), 16, 32); p&addrNoRandomize != 0 {
			t.Fatalf("a child of this process has persona %#x after CheckNoASLR", p)
		}
	}
	if after, _ := os.ReadFile("/proc/sys/kernel/randomize_va_space"); string(after) != string(before) {
		t.Errorf("randomize_va_space changed from %q to %q", before, after)
	}
}
