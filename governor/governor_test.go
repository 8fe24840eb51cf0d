package governor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/perflock/perflock/internal/cpufreqtest"
)

// fake is a cpufreq sysfs tree in a temporary folder, and a state file.
type fake struct {
	*cpufreqtest.Tree
	t     *testing.T
	root  string
	state string
}

const (
	hwMax = cpufreqtest.HWMax
	hwMin = cpufreqtest.HWMin
)

// newFake makes n CPUs running schedutil between 800 MHz and 3 GHz; avail,
// when not empty, is their scaling_available_frequencies.
func newFake(t *testing.T, n int, avail string) *fake {
	t.Helper()
	root := filepath.Join(t.TempDir(), "cpu")
	return &fake{Tree: cpufreqtest.New(t, root, n, avail), t: t, root: root, state: filepath.Join(t.TempDir(), "run", "governor.json")}
}

func (f *fake) settings(cpu int) string { return f.Settings(cpu) }

func (f *fake) wantAll(n int, want string) {
	f.t.Helper()
	f.WantAll(n, want)
}

func (f *fake) stateExists() bool {
	_, err := os.Stat(f.state)
	return err == nil
}

// pinner is a Pinner on the fake tree whose writes act like the kernel's:
// a minimum above the maximum (or a maximum below the minimum) is refused.
// fail, when it returns an error for a path, makes that write fail.
func (f *fake) pinner(fail func(path, value string) error) *Pinner {
	p := New(f.root, f.state)
	p.write = func(path, value string) error {
		if fail != nil {
			if err := fail(path, value); err != nil {
				return err
			}
		}
		dir, name := filepath.Split(path)
		other := map[string]string{"scaling_min_freq": "scaling_max_freq", "scaling_max_freq": "scaling_min_freq"}[name]
		if other != "" {
			b, _ := os.ReadFile(filepath.Join(dir, other))
			o, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			v, _ := strconv.Atoi(value)
			if (name == "scaling_min_freq" && v > o) || (name == "scaling_max_freq" && v < o) {
				return fmt.Errorf("write %s=%s: invalid argument (%s is %d)", path, value, other, o)
			}
		}
		return writeAttr(path, value)
	}
	return p
}

const original = cpufreqtest.Original

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{
		"": None, "none": None, "performance": Performance,
		"70": {Percent: 70}, "70%": {Percent: 70}, "100": {Percent: 100}, "1%": {Percent: 1},
	} {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", in, got, err, want)
		}
		if (in == "none" || in == "performance" || in == "70%") && got.String() != in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), in)
		}
	}
	for _, in := range []string{"0", "101", "-5", "fast", "50.5", "%"} {
		if _, err := ParseMode(in); !errors.Is(err, ErrMode) {
			t.Errorf("ParseMode(%q): %v, want ErrMode", in, err)
		}
	}
}

func TestPerformanceRoundTrip(t *testing.T) {
	f := newFake(t, 4, "")
	p := f.pinner(nil)
	if err := p.Set(context.Background(), Performance); err != nil {
		t.Fatal(err)
	}
	f.wantAll(4, "performance 800000-"+hwMax)
	if !p.Pinned() || !f.stateExists() {
		t.Fatalf("pinned %v, state file %v", p.Pinned(), f.stateExists())
	}
	var st State
	b, _ := os.ReadFile(f.state)
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.CPUs) != 4 || st.Mode != "performance" || st.CPUs[3] != (CPUState{"cpu3/cpufreq", "schedutil", "800000", "3000000"}) {
		t.Errorf("state file: %s", b)
	}
	if err := p.Set(context.Background(), Mode{Percent: 50}); !errors.Is(err, ErrPinned) {
		t.Errorf("Set while pinned: %v, want ErrPinned", err)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	f.wantAll(4, original)
	if p.Pinned() || f.stateExists() {
		t.Errorf("after Restore: pinned %v, state file %v", p.Pinned(), f.stateExists())
	}
	if err := p.Restore(); err != nil {
		t.Errorf("second Restore: %v", err)
	}
}

func TestPercentRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		avail   string
		percent int
		want    string
	}{
		{"", 50, "1750000"}, // 50% of 3.5 GHz
		{"", 100, hwMax},    // the top
		{"", 5, hwMin},      // not below cpuinfo_min_freq
		{"", 20, "700000"},  // below the current minimum: min is written first
		{"3500000 2800000 2100000 1400000 800000", 45, "1400000"}, // 1.575 GHz: the nearest
		{"3500000 2800000 2100000 1400000 800000", 50, "2100000"}, // 1.75 GHz: a tie goes up
		{"3500000 2800000 2100000 1400000 800000", 100, "3500000"},
	} {
		t.Run(fmt.Sprintf("%d%%/%s", tc.percent, tc.avail), func(t *testing.T) {
			f := newFake(t, 3, tc.avail)
			p := f.pinner(nil)
			if err := p.Set(context.Background(), Mode{Percent: tc.percent}); err != nil {
				t.Fatal(err)
			}
			f.wantAll(3, "performance "+tc.want+"-"+tc.want)
			if err := p.Restore(); err != nil {
				t.Fatal(err)
			}
			f.wantAll(3, original)
			if f.stateExists() {
				t.Error("state file left")
			}
		})
	}
}

func TestNoneDoesNothing(t *testing.T) {
	f := newFake(t, 2, "")
	p := f.pinner(func(path, _ string) error { return fmt.Errorf("wrote %s", path) })
	if err := p.Set(context.Background(), None); err != nil {
		t.Fatal(err)
	}
	if p.Pinned() || f.stateExists() {
		t.Error("None pinned")
	}
}

// A restarted daemon finds the state file of a pin and puts the settings
// back; until then Set refuses to pin (it would save pinned settings).
func TestRestoreLeftover(t *testing.T) {
	f := newFake(t, 4, "")
	if err := f.pinner(nil).Set(context.Background(), Mode{Percent: 80}); err != nil {
		t.Fatal(err)
	}
	f.wantAll(4, "performance 2800000-2800000")
	// The daemon dies; a new one starts.
	p := f.pinner(nil)
	if err := p.Set(context.Background(), Performance); !errors.Is(err, ErrLeftover) {
		t.Fatalf("Set with a leftover state file: %v, want ErrLeftover", err)
	}
	found, err := p.RestoreLeftover()
	if err != nil || !found {
		t.Fatalf("RestoreLeftover: %v, %v", found, err)
	}
	f.wantAll(4, original)
	if f.stateExists() {
		t.Error("state file left")
	}
	if found, err := p.RestoreLeftover(); found || err != nil {
		t.Errorf("second RestoreLeftover: %v, %v", found, err)
	}
	if err := p.Set(context.Background(), Performance); err != nil {
		t.Errorf("Set after RestoreLeftover: %v", err)
	}
}

func TestRestoreLeftoverRejectsABadStateFile(t *testing.T) {
	f := newFake(t, 1, "")
	os.MkdirAll(filepath.Dir(f.state), 0o755)
	for _, content := range []string{"{", `{"cpus":[{"dir":"../../etc","scaling_governor":"x"}]}`} {
		os.WriteFile(f.state, []byte(content), 0o644)
		if _, err := f.pinner(nil).RestoreLeftover(); !errors.Is(err, ErrState) {
			t.Errorf("state %s: %v, want ErrState", content, err)
		}
		if !f.stateExists() {
			t.Error("bad state file removed")
		}
	}
	f.wantAll(1, original)
}

// A write that fails halfway through Set puts every CPU back and removes
// the state file.
func TestPartialFailureRollsBack(t *testing.T) {
	for _, attr := range []string{"scaling_governor", "scaling_min_freq", "scaling_max_freq"} {
		t.Run(attr, func(t *testing.T) {
			f := newFake(t, 4, "")
			failing := filepath.Join("cpu2", "cpufreq", attr)
			armed := true
			p := f.pinner(func(path, _ string) error {
				if armed && strings.HasSuffix(path, failing) {
					armed = false
					return errors.New("injected failure")
				}
				return nil
			})
			err := p.Set(context.Background(), Mode{Percent: 50})
			if err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("Set: %v, want the injected failure", err)
			}
			f.wantAll(4, original)
			if p.Pinned() || f.stateExists() {
				t.Errorf("after a failed Set: pinned %v, state file %v", p.Pinned(), f.stateExists())
			}
		})
	}
}

// When the roll back fails too, the state file stays for RestoreLeftover.
func TestFailedRollBackKeepsTheStateFile(t *testing.T) {
	f := newFake(t, 2, "")
	fail := true
	p := f.pinner(func(path, value string) error {
		if fail && strings.Contains(path, "cpu1") && value != "schedutil" {
			return errors.New("injected failure")
		}
		if fail && strings.Contains(path, "cpu0") && value == "schedutil" {
			return errors.New("injected roll back failure")
		}
		return nil
	})
	err := p.Set(context.Background(), Performance)
	if err == nil || !strings.Contains(err.Error(), "roll back") {
		t.Fatalf("Set: %v", err)
	}
	if !f.stateExists() {
		t.Fatal("state file removed though the roll back failed")
	}
	fail = false
	if found, err := p.RestoreLeftover(); !found || err != nil {
		t.Fatalf("RestoreLeftover: %v, %v", found, err)
	}
	f.wantAll(2, original)
}

// A Restore that fails keeps the state file and can be retried.
func TestFailedRestoreCanBeRetried(t *testing.T) {
	f := newFake(t, 2, "")
	fail := false
	p := f.pinner(func(path, _ string) error {
		if fail && strings.Contains(path, "cpu1") {
			return errors.New("injected failure")
		}
		return nil
	})
	if err := p.Set(context.Background(), Performance); err != nil {
		t.Fatal(err)
	}
	fail = true
	if err := p.Restore(); err == nil {
		t.Fatal("Restore did not fail")
	}
	if !p.Pinned() || !f.stateExists() {
		t.Fatalf("after a failed Restore: pinned %v, state file %v", p.Pinned(), f.stateExists())
	}
	if got := f.settings(0); got != original {
		t.Errorf("cpu0 not restored: %s", got)
	}
	fail = false
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	f.wantAll(2, original)
	if f.stateExists() {
		t.Error("state file left")
	}
}

func TestCancelledSetChangesNothing(t *testing.T) {
	f := newFake(t, 2, "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.pinner(nil).Set(ctx, Performance); !errors.Is(err, context.Canceled) {
		t.Fatalf("Set: %v", err)
	}
	f.wantAll(2, original)
	if f.stateExists() {
		t.Error("state file written")
	}
}

func TestNoCpufreq(t *testing.T) {
	f := newFake(t, 0, "")
	os.MkdirAll(filepath.Join(f.root, "cpu0"), 0o755) // a CPU without cpufreq
	for _, root := range []string{f.root, filepath.Join(t.TempDir(), "absent")} {
		p := New(root, f.state)
		err := p.Set(context.Background(), Performance)
		if !errors.Is(err, ErrNoCpufreq) {
			t.Errorf("Set on %s: %v, want ErrNoCpufreq", root, err)
		}
		if f.stateExists() || p.Pinned() {
			t.Error("pinned without cpufreq")
		}
		if err := p.Restore(); err != nil {
			t.Error(err)
		}
	}
}

func TestPerformanceUnsupported(t *testing.T) {
	f := newFake(t, 2, "")
	os.WriteFile(filepath.Join(f.root, "cpu1", "cpufreq", "scaling_available_governors"), []byte("userspace powersave\n"), 0o644)
	err := f.pinner(nil).Set(context.Background(), Performance)
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Set: %v, want ErrUnsupported", err)
	}
	f.wantAll(2, original)
	if f.stateExists() {
		t.Error("state file written")
	}
}

// CPUs of one cpufreq policy share a folder (cpuN/cpufreq links to
// cpufreq/policyM): it is saved and set once.
func TestSharedPolicies(t *testing.T) {
	f := newFake(t, 0, "")
	pol := filepath.Join(f.root, "cpufreq", "policy0")
	os.MkdirAll(pol, 0o755)
	for k, v := range map[string]string{"scaling_governor": "powersave", "scaling_min_freq": "800000", "scaling_max_freq": "3000000", "cpuinfo_max_freq": hwMax, "scaling_available_governors": "performance powersave"} {
		os.WriteFile(filepath.Join(pol, k), []byte(v+"\n"), 0o644)
	}
	for i := range 3 {
		os.MkdirAll(filepath.Join(f.root, fmt.Sprintf("cpu%d", i)), 0o755)
		if err := os.Symlink("../cpufreq/policy0", filepath.Join(f.root, fmt.Sprintf("cpu%d", i), "cpufreq")); err != nil {
			t.Fatal(err)
		}
	}
	p := f.pinner(nil)
	if err := p.Set(context.Background(), Mode{Percent: 40}); err != nil {
		t.Fatal(err)
	}
	f.wantAll(3, "performance 1400000-1400000")
	b, _ := os.ReadFile(f.state)
	var st State
	json.Unmarshal(b, &st)
	if len(st.CPUs) != 1 || st.CPUs[0].Dir != "cpu0/cpufreq" {
		t.Errorf("state: %s", b)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	f.wantAll(3, "powersave 800000-3000000")
}

// This machine's own sysfs: only looked at, never written.
func TestThisMachine(t *testing.T) {
	dirs, err := New("", filepath.Join(t.TempDir(), "state")).cpufreqDirs()
	switch {
	case errors.Is(err, ErrNoCpufreq):
		t.Logf("no cpufreq here: %v", err)
	case err != nil:
		t.Fatal(err)
	default:
		t.Logf("cpufreq: %d policies (%s ...)", len(dirs), dirs[0])
	}
}

// A restarted daemon whose pinned job still runs adopts the pin and
// restores it when the job ends.
func TestAdopt(t *testing.T) {
	f := newFake(t, 2, "")
	if err := f.pinner(nil).Set(context.Background(), Performance); err != nil {
		t.Fatal(err)
	}
	p := f.pinner(nil)
	if found, err := p.Adopt(); !found || err != nil {
		t.Fatalf("Adopt: %v, %v", found, err)
	}
	if !p.Pinned() {
		t.Fatal("not pinned after Adopt")
	}
	f.wantAll(2, "performance 800000-"+hwMax)
	if _, err := p.Adopt(); !errors.Is(err, ErrPinned) {
		t.Errorf("second Adopt: %v, want ErrPinned", err)
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	f.wantAll(2, original)
	if f.stateExists() {
		t.Error("state file left")
	}
	if found, err := f.pinner(nil).Adopt(); found || err != nil {
		t.Errorf("Adopt with no state file: %v, %v", found, err)
	}
}

// Check finds what would make Set fail, without writing anything.
func TestCheck(t *testing.T) {
	f := newFake(t, 2, "")
	p := f.pinner(func(path, _ string) error { return fmt.Errorf("wrote %s", path) })
	for _, m := range []Mode{None, Performance, {Percent: 50}} {
		if err := p.Check(m); err != nil {
			t.Errorf("Check(%v): %v", m, err)
		}
	}
	f.wantAll(2, original)
	if f.stateExists() || p.Mode() != None {
		t.Error("Check pinned")
	}
	os.WriteFile(filepath.Join(f.root, "cpu1", "cpufreq", "scaling_available_governors"), []byte("powersave\n"), 0o644)
	if err := p.Check(Performance); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Check(performance) without the governor: %v, want ErrUnsupported", err)
	}
	empty := newFake(t, 0, "")
	if err := New(empty.root, empty.state).Check(Mode{Percent: 70}); !errors.Is(err, ErrNoCpufreq) {
		t.Errorf("Check without cpufreq: %v, want ErrNoCpufreq", err)
	}
	if err := New(empty.root, empty.state).Check(None); err != nil {
		t.Errorf("Check(none) without cpufreq: %v", err)
	}
}

// Mode is what is pinned: by Set, or taken over by Adopt.
func TestMode(t *testing.T) {
	f := newFake(t, 2, "")
	p := f.pinner(nil)
	if err := p.Set(context.Background(), Mode{Percent: 70}); err != nil {
		t.Fatal(err)
	}
	if m := p.Mode(); m != (Mode{Percent: 70}) {
		t.Errorf("Mode after Set(70%%): %v", m)
	}
	q := f.pinner(nil)
	if _, err := q.Adopt(); err != nil {
		t.Fatal(err)
	}
	if m := q.Mode(); m != (Mode{Percent: 70}) {
		t.Errorf("Mode after Adopt: %v", m)
	}
	if err := q.Restore(); err != nil {
		t.Fatal(err)
	}
	if m := q.Mode(); m != None {
		t.Errorf("Mode after Restore: %v", m)
	}
}

// A state file that is not the daemon's own is not believed: its settings
// are never written to the CPUs.
func TestForeignStateFileIsNotBelieved(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a file of another user")
	}
	f := newFake(t, 2, "")
	if err := New(f.root, f.state).Set(context.Background(), Performance); err != nil {
		t.Fatal(err)
	}
	os.Chown(f.state, 65534, 65534)
	p := New(f.root, f.state)
	if found, err := p.RestoreLeftover(); !errors.Is(err, ErrState) || !found {
		t.Fatalf("RestoreLeftover of a file of uid 65534: %v, %v; want ErrState", found, err)
	}
	if found, err := p.Adopt(); !errors.Is(err, ErrState) || !found {
		t.Fatalf("Adopt of a file of uid 65534: %v, %v; want ErrState", found, err)
	}
}
