package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// addrNoRandomize is ADDR_NO_RANDOMIZE of personality(2).
const addrNoRandomize = 0x0040000

// TestNoASLRTurnsOffRandomizationForTheJobOnly: with --no-aslr the job's
// children carry ADDR_NO_RANDOMIZE and get the same stack and mmap
// addresses run after run; without it the flag is clear; the machine's
// randomize_va_space stays as it was.
func TestNoASLRTurnsOffRandomizationForTheJobOnly(t *testing.T) {
	e := newEnv(t, drivers()[0], "freeze")
	global, err := os.ReadFile("/proc/sys/kernel/randomize_va_space")
	if err != nil {
		t.Skip(err)
	}
	// The job is a shell; the layout is that of cat, its child.
	layout := func(prog string, flags ...string) (uint64, string) {
		t.Helper()
		out := filepath.Join(e.dir, "layout")
		os.Remove(out)
		args := append([]string{"--socket", e.sock}, flags...)
		args = append(args, "--", "sh", "-c", `cat /proc/self/personality /proc/self/maps > "$0"`, out)
		p := e.start(prog, args)
		if code := e.exit(p); code != 0 {
			if strings.Contains(p.stderr.String(), "cannot turn off address-space randomization") {
				t.Skipf("this kernel or sandbox refuses: %s", p.stderr)
			}
			t.Fatalf("%s %v: exit %d: %s", prog, flags, code, p.stderr)
		}
		b, err := os.ReadFile(out)
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
	p1, maps1 := layout("perfrun", "--no-aslr")
	p2, maps2 := layout("perfrun", "--no-aslr")
	if p1&addrNoRandomize == 0 || p2&addrNoRandomize == 0 {
		t.Errorf("perfrun --no-aslr: the job's personas are %#x and %#x, want the %#x bit", p1, p2, addrNoRandomize)
	}
	if maps1 != maps2 || !strings.Contains(maps1, "[stack]") {
		t.Errorf("perfrun --no-aslr: two runs have different layouts:\n%s\nand\n%s", maps1, maps2)
	}
	if p, _ := layout("pls", "--no-aslr"); p&addrNoRandomize == 0 {
		t.Errorf("pls --no-aslr: the job's persona is %#x", p)
	}
	p3, maps3 := layout("perfrun")
	p4, maps4 := layout("perfrun")
	if p3&addrNoRandomize != 0 || p4&addrNoRandomize != 0 {
		t.Errorf("perfrun without --no-aslr: personas %#x and %#x have the %#x bit", p3, p4, addrNoRandomize)
	}
	if strings.TrimSpace(string(global)) != "0" && maps3 == maps4 {
		t.Errorf("without --no-aslr two runs share one layout, though randomize_va_space is %s", global)
	}
	if now, _ := os.ReadFile("/proc/sys/kernel/randomize_va_space"); string(now) != string(global) {
		t.Errorf("randomize_va_space changed from %q to %q", global, now)
	}
	e.waitQueue("")
}
