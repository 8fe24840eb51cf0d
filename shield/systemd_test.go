package shield

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perflock/perflock/internal/cpuset"
)

// fakeSystemd models what systemd 252 was seen to do with AllowedCPUs=
// (see the Systemd doc): the cpuset controller is enabled at the root
// while any unit sets AllowedCPUs=, and dropped, widening every unit, when
// none does; setting a list writes the unit's cpuset.cpus, and removing
// the setting writes nothing, so the unit keeps the CPUs last written.
type fakeSystemd struct {
	mu      sync.Mutex
	version int
	online  cpuset.Set
	loaded  map[string]bool
	allowed map[string]cpuset.Set
	written map[string]cpuset.Set // each unit's cpuset.cpus
	sets    []string              // "unit=cpus", each SetAllowedCPUs
}

func newFakeSystemd(online string, loaded ...string) *fakeSystemd {
	f := &fakeSystemd{version: 252, online: cpuset.MustParse(online), loaded: map[string]bool{}, allowed: map[string]cpuset.Set{}, written: map[string]cpuset.Set{}}
	for _, u := range loaded {
		f.loaded[u] = true
	}
	return f
}

func (f *fakeSystemd) Version(ctx context.Context) (int, error) { return f.version, nil }

func (f *fakeSystemd) LoadState(ctx context.Context, unit string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.loaded[unit] {
		return "loaded", nil
	}
	return "not-found", nil
}

func (f *fakeSystemd) AllowedCPUs(ctx context.Context, unit string) (cpuset.Set, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.allowed[unit], nil
}

func (f *fakeSystemd) cpusetEnabled() bool {
	for _, a := range f.allowed {
		if !a.IsEmpty() {
			return true
		}
	}
	return false
}

func (f *fakeSystemd) EffectiveCPUs(ctx context.Context, unit string) (cpuset.Set, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.cpusetEnabled() {
		return cpuset.Set{}, nil // no cpuset controller: no cpuset.cpus.effective
	}
	if w := f.written[unit]; !w.IsEmpty() {
		return w.Intersect(f.online), nil
	}
	return f.online, nil
}

func (f *fakeSystemd) SetAllowedCPUs(ctx context.Context, unit string, cpus cpuset.Set) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded[unit] {
		return fmt.Errorf("units: set AllowedCPUs=%s on %s: unit not loaded", cpus, unit)
	}
	f.sets = append(f.sets, unit+"="+cpus.String())
	f.allowed[unit] = cpus
	if !cpus.IsEmpty() {
		f.written[unit] = cpus
	}
	if !f.cpusetEnabled() {
		clear(f.written) // the controller is gone, and with it every cpuset.cpus
	}
	return nil
}

func (f *fakeSystemd) effective(t *testing.T, unit string) string {
	t.Helper()
	e, _ := f.EffectiveCPUs(ctx, unit)
	if e.IsEmpty() {
		return "every CPU"
	}
	return e.String()
}

var allUnits = []string{"init.scope", "system.slice", "user.slice", "machine.slice", "perflock-shared.slice", "perflock-exclusive.slice", "perflock.slice"}

func (f *fakeSystemd) setBy(unit string) bool {
	for _, s := range f.sets {
		if strings.HasPrefix(s, unit+"=") {
			return true
		}
	}
	return false
}

// The shield confines the loaded units, not the exclusive slice, and puts
// an administrator's own AllowedCPUs= back.
func TestSystemdConfinesTheUnitsAndRestoresAnAdministratorsSetting(t *testing.T) {
	f := newFakeSystemd("0-3", "init.scope", "system.slice", "user.slice", "perflock-shared.slice", "perflock-exclusive.slice", "perflock.slice")
	f.SetAllowedCPUs(ctx, "user.slice", cpuset.MustParse("0-1")) // the administrator's
	f.sets = nil
	sd := NewSystemd(f, "perflock-shared.slice")
	m := newMachine(t)
	sd.online, sd.possible = m.online, m.possible
	s := New(t.TempDir()+"/shield.json", sd).WithOnline(sd.online)
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"init.scope", "system.slice", "user.slice", "perflock-shared.slice"} {
		if got := f.allowed[u].String(); got != "0" {
			t.Errorf("AllowedCPUs of %s = %q, want 0", u, got)
		}
		if got := f.effective(t, u); got != "0" {
			t.Errorf("EffectiveCPUs of %s = %q, want 0", u, got)
		}
	}
	for _, u := range []string{"machine.slice", "perflock-exclusive.slice", "perflock.slice"} {
		if f.setBy(u) {
			t.Errorf("%s was set: %q", u, f.sets)
		}
	}
	if got := f.effective(t, "perflock-exclusive.slice"); got != "0-3" {
		t.Errorf("EffectiveCPUs of the exclusive slice = %q, want 0-3", got)
	}
	if r := strings.Join(s.Report(), "\n"); r != "systemd: AllowedCPUs=0 on init.scope, system.slice, user.slice, perflock-shared.slice" {
		t.Errorf("Report: %q", r)
	}
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"init.scope": "", "system.slice": "", "user.slice": "0-1", "perflock-shared.slice": ""}
	for u, w := range want {
		if got := f.allowed[u].String(); got != w {
			t.Errorf("after Lower: AllowedCPUs of %s = %q, want %q", u, got, w)
		}
	}
	// user.slice keeps cpuset enabled at the root, so removing the others'
	// setting wrote nothing: Restore had to write every possible CPU first.
	for u, w := range map[string]string{"init.scope": "0-3", "system.slice": "0-3", "user.slice": "0-1", "perflock-shared.slice": "0-3"} {
		if got := f.effective(t, u); got != w {
			t.Errorf("after Lower: EffectiveCPUs of %s = %q, want %q", u, got, w)
		}
	}
	if !slices.Contains(f.sets, "system.slice=0-7") {
		t.Errorf("Restore did not widen system.slice with every possible CPU: %q", f.sets)
	}
	if slices.Contains(f.sets, "user.slice=0-7") {
		t.Errorf("Restore widened user.slice, which its own setting widened: %q", f.sets)
	}
}

// Where no unit keeps cpuset enabled, removing the settings widens every
// unit, and Restore writes nothing more.
func TestSystemdRestoreWritesNoMoreThanItMust(t *testing.T) {
	f := newFakeSystemd("0-3", "init.scope", "system.slice", "user.slice")
	sd := NewSystemd(f, "")
	m := newMachine(t)
	sd.online, sd.possible = m.online, m.possible
	s := New(t.TempDir()+"/shield.json", sd).WithOnline(sd.online)
	if err := s.Raise(ctx, cpuset.MustParse("0-1")); err != nil {
		t.Fatal(err)
	}
	f.sets = nil
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []string{"init.scope=", "system.slice=", "user.slice="}; !slices.Equal(f.sets, want) {
		t.Errorf("Lower set %q, want %q", f.sets, want)
	}
	for _, u := range []string{"init.scope", "system.slice", "user.slice"} {
		if got := f.effective(t, u); got != "every CPU" {
			t.Errorf("after Lower: %s on %s", u, got)
		}
	}
}

// stuckSystemd never widens system.slice once stuck.
type stuckSystemd struct {
	*fakeSystemd
	stuck *bool
}

func (s stuckSystemd) EffectiveCPUs(ctx context.Context, unit string) (cpuset.Set, error) {
	if unit == "system.slice" && *s.stuck {
		return cpuset.MustParse("0"), nil
	}
	return s.fakeSystemd.EffectiveCPUs(ctx, unit)
}

// A unit whose tasks stay narrow is an error naming it, and the state
// file stays.
func TestSystemdRestoreThatDoesNotWidenIsAnError(t *testing.T) {
	stuck := false
	f := stuckSystemd{newFakeSystemd("0-3", "system.slice", "user.slice"), &stuck}
	sd := NewSystemd(f, "")
	m := newMachine(t)
	sd.online, sd.possible = m.online, m.possible
	state := t.TempDir() + "/shield.json"
	s := New(state, sd).WithOnline(sd.online)
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	stuck = true
	sd.settle = 100 * time.Millisecond
	err := s.Lower(ctx)
	if !errors.Is(err, ErrStillConfined) || !strings.Contains(err.Error(), "system.slice: EffectiveCPUs=0, want 0-3") {
		t.Fatalf("Lower: %v, want ErrStillConfined naming system.slice", err)
	}
	// Waiting for it to widen ends with ctx.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Lower(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lower with a cancelled ctx: %v", err)
	}
	if !s.Raised() {
		t.Error("not raised after a failed Lower")
	}
}

func TestSystemdCheck(t *testing.T) {
	f := newFakeSystemd("0-3")
	f.version = 243
	if err := NewSystemd(f, "").Check(ctx); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "systemd 243 has no AllowedCPUs=") {
		t.Errorf("Check on systemd 243: %v", err)
	}
	f.version = 252
	sd := NewSystemd(f, "")
	sd.cgroup = t.TempDir()
	if err := sd.Check(ctx); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "unified cgroup hierarchy") {
		t.Errorf("Check without cgroup2: %v", err)
	}
}

// A saved state naming a unit the backend does not confine (the exclusive
// slice, above all) is refused.
func TestSystemdBelievesOnlyItsOwnUnits(t *testing.T) {
	f := newFakeSystemd("0-3", allUnits...)
	sd := NewSystemd(f, "perflock-shared.slice")
	for _, u := range []string{"perflock-exclusive.slice", "perflock.slice", "-.slice", "sshd.service"} {
		saved := []byte(fmt.Sprintf(`{"units":[{"unit":%q,"allowed":"0","effective":""}]}`, u))
		if err := sd.Restore(ctx, saved); !errors.Is(err, ErrState) {
			t.Errorf("Restore of %s: %v, want ErrState", u, err)
		}
		if err := sd.Confine(ctx, saved, cpu0); !errors.Is(err, ErrState) {
			t.Errorf("Confine of %s: %v, want ErrState", u, err)
		}
	}
	if len(f.sets) != 0 {
		t.Errorf("set %q", f.sets)
	}
}
