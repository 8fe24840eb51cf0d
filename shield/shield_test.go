package shield

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perflock/perflock/internal/cpuset"
	"github.com/perflock/perflock/internal/ownfile"
)

var ctx = context.Background()

func TestRaiseConfinesEverythingAndLowerRestoresItExactly(t *testing.T) {
	m := newMachine(t)
	before := m.snapshot()
	s := m.shield(nil)
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	m.want(confined)
	if !s.Raised() || !s.Housekeeping().Equal(cpu0) || !m.stateExists() {
		t.Fatalf("after Raise: raised %v, housekeeping %q, state file %v", s.Raised(), s.Housekeeping(), m.stateExists())
	}

	// The state file names the housekeeping CPUs and what each backend saved.
	b, _ := os.ReadFile(m.state)
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.Housekeeping.String() != "0" || len(st.Backends) != 3 || st.Backends[0].Backend != "cgroupfs" || st.Backends[1].Backend != "irq" || st.Backends[2].Backend != "workqueue" {
		t.Errorf("state file:\n%s", b)
	}
	for _, want := range []string{`"path":"user","cpus":"0-1"`, `{"irq":24,"cpus":"0-3"}`, `"default_smp_affinity":"0-3"`, `"cpumask":"0-3"`} {
		if !strings.Contains(compact(b), want) {
			t.Errorf("state file lacks %s:\n%s", want, b)
		}
	}

	report := strings.Join(s.Report(), "\n")
	for _, want := range []string{"cgroupfs: 3 cgroups confined to CPUs 0", "1 processes in the root cgroup", "irq: 4 IRQs moved to CPUs 0"} {
		if !strings.Contains(report, want) {
			t.Errorf("Report lacks %q:\n%s", want, report)
		}
	}

	if err := s.Raise(ctx, cpu0); !errors.Is(err, ErrRaised) {
		t.Errorf("Raise while raised: %v, want ErrRaised", err)
	}
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	m.wantSnapshot(before)
	if s.Raised() || m.stateExists() || !s.Housekeeping().IsEmpty() {
		t.Errorf("after Lower: raised %v, state file %v", s.Raised(), m.stateExists())
	}
	if err := s.Lower(ctx); err != nil {
		t.Errorf("second Lower: %v", err)
	}
}

func compact(b []byte) string {
	return strings.Join(strings.Fields(string(b)), "")
}

// spy is a backend that records, at Confine, whether the state file
// already held what it saved.
type spy struct {
	name, state    string
	savedFirst     bool
	confined       bool
	restored       int
	failConfine    error
	failRestore    error
	savedStateJSON string
}

func (b *spy) Name() string                    { return b.name }
func (b *spy) Check(ctx context.Context) error { return nil }
func (b *spy) Save(ctx context.Context) (json.RawMessage, error) {
	return json.RawMessage(fmt.Sprintf(`{"spy":%q}`, b.name)), nil
}
func (b *spy) Confine(ctx context.Context, saved json.RawMessage, housekeeping cpuset.Set) error {
	data, err := os.ReadFile(b.state)
	b.savedFirst = err == nil && strings.Contains(compact(data), fmt.Sprintf(`"state":{"spy":%q}`, b.name))
	b.confined = true
	return b.failConfine
}
func (b *spy) Restore(ctx context.Context, saved json.RawMessage) error {
	b.restored++
	b.savedStateJSON = string(saved)
	return b.failRestore
}

// Every backend's earlier settings are in the state file before the first
// one changes anything.
func TestRaiseSavesEveryBackendBeforeChangingAnything(t *testing.T) {
	m := newMachine(t)
	a, b := &spy{name: "a", state: m.state}, &spy{name: "b", state: m.state}
	s := New(m.state, a, b).WithOnline(m.online)
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	if !a.savedFirst || !b.savedFirst {
		t.Errorf("state file not written before Confine: a %v, b %v", a.savedFirst, b.savedFirst)
	}
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	if a.restored != 1 || b.restored != 1 || a.savedStateJSON != `{"spy":"a"}` {
		t.Errorf("Lower restored a %d times (%s), b %d times", a.restored, a.savedStateJSON, b.restored)
	}
}

// A write that fails midway through Raise puts back everything confined
// so far, the failing backend included, and removes the state file.
func TestRaiseRollsBackAFailureMidway(t *testing.T) {
	for _, failing := range []string{"cgroup/user/cpuset.cpus", "irq/24/smp_affinity_list", "irq/default_smp_affinity", "workqueue/cpumask"} {
		t.Run(failing, func(t *testing.T) {
			m := newMachine(t)
			before := m.snapshot()
			armed := true
			s := m.shield(func(p, v string) error {
				if armed && strings.HasSuffix(p, failing) {
					armed = false
					return errors.New("injected failure")
				}
				return nil
			})
			err := s.Raise(ctx, cpu0)
			if err == nil || !strings.Contains(err.Error(), "injected failure") || !strings.Contains(err.Error(), failing) {
				t.Fatalf("Raise: %v, want the injected failure naming %s", err, failing)
			}
			m.wantSnapshot(before)
			if s.Raised() || m.stateExists() {
				t.Errorf("after a failed Raise: raised %v, state file %v", s.Raised(), m.stateExists())
			}
			// And the next Raise works.
			if err := s.Raise(ctx, cpu0); err != nil {
				t.Fatal(err)
			}
			if err := s.Lower(ctx); err != nil {
				t.Fatal(err)
			}
			m.wantSnapshot(before)
		})
	}
}

// When the roll back fails too, the state file keeps what could not be
// restored, for RestoreLeftover.
func TestFailedRollBackKeepsWhatWasNotRestored(t *testing.T) {
	m := newMachine(t)
	a := &spy{name: "a", state: m.state, failRestore: errors.New("injected restore failure")}
	b := &spy{name: "b", state: m.state, failConfine: errors.New("injected confine failure")}
	c := &spy{name: "c", state: m.state}
	s := New(m.state, a, b, c).WithOnline(m.online)
	err := s.Raise(ctx, cpu0)
	if err == nil || !strings.Contains(err.Error(), "injected confine failure") || !strings.Contains(err.Error(), "roll back") {
		t.Fatalf("Raise: %v", err)
	}
	if c.confined || c.restored != 0 || b.restored != 1 || a.restored != 1 {
		t.Errorf("confined c %v; restored a %d, b %d, c %d times", c.confined, a.restored, b.restored, c.restored)
	}
	if s.Raised() {
		t.Error("raised after a failed Raise")
	}
	st := readState(t, m.state)
	if len(st.Backends) != 1 || st.Backends[0].Backend != "a" {
		t.Errorf("state file keeps %+v, want only a", st.Backends)
	}
	if err := s.Raise(ctx, cpu0); !errors.Is(err, ErrLeftover) {
		t.Errorf("Raise with a leftover: %v, want ErrLeftover", err)
	}
	a.failRestore = nil
	if found, err := s.RestoreLeftover(ctx); !found || err != nil {
		t.Fatalf("RestoreLeftover: %v, %v", found, err)
	}
	if a.restored != 2 || b.restored != 1 || m.stateExists() {
		t.Errorf("RestoreLeftover restored a %d, b %d times; state file %v", a.restored, b.restored, m.stateExists())
	}
}

func readState(t *testing.T, path string) State {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// A Lower that fails restores what it can, keeps the rest in the state
// file, stays raised, and can be retried.
func TestFailedLowerCanBeRetried(t *testing.T) {
	m := newMachine(t)
	before := m.snapshot()
	fail := false
	s := m.shield(func(p, v string) error {
		if fail && strings.HasSuffix(p, "workqueue/cpumask") {
			return errors.New("injected failure")
		}
		return nil
	})
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	fail = true
	err := s.Lower(ctx)
	if err == nil || !strings.Contains(err.Error(), "injected failure") || !strings.Contains(err.Error(), m.state) {
		t.Fatalf("Lower: %v, want the failure and the state file named", err)
	}
	if !s.Raised() {
		t.Error("not raised after a failed Lower")
	}
	m.want(map[string]string{"irq/24/smp_affinity_list": "0-3", "cgroup/user/cpuset.cpus": "0-1", "workqueue/cpumask": "1"})
	if st := readState(t, m.state); len(st.Backends) != 1 || st.Backends[0].Backend != "workqueue" {
		t.Errorf("state file keeps %+v, want only workqueue", st.Backends)
	}
	fail = false
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	m.wantSnapshot(before)
	if s.Raised() || m.stateExists() {
		t.Error("still raised")
	}
}

// A daemon killed while the shield is raised leaves the machine confined;
// the next one adopts the state file and restores it when the job ends.
func TestAdoptTakesOverAKilledDaemonsShield(t *testing.T) {
	m := newMachine(t)
	before := m.snapshot()
	if err := m.shield(nil).Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	// The first daemon is gone, its Shield with it.
	s := m.shield(nil)
	if found, err := s.Adopt(); !found || err != nil {
		t.Fatalf("Adopt: %v, %v", found, err)
	}
	if !s.Raised() || !s.Housekeeping().Equal(cpu0) {
		t.Fatalf("after Adopt: raised %v, housekeeping %q", s.Raised(), s.Housekeeping())
	}
	m.want(confined)
	if _, err := s.Adopt(); !errors.Is(err, ErrRaised) {
		t.Errorf("second Adopt: %v, want ErrRaised", err)
	}
	if _, err := s.RestoreLeftover(ctx); !errors.Is(err, ErrRaised) {
		t.Errorf("RestoreLeftover while raised: %v, want ErrRaised", err)
	}
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	m.wantSnapshot(before)
	if m.stateExists() {
		t.Error("state file left")
	}
	if found, err := m.shield(nil).Adopt(); found || err != nil {
		t.Errorf("Adopt with no state file: %v, %v", found, err)
	}
}

// A daemon that restarts when no job of its runs any longer restores at
// once.
func TestRestoreLeftoverRestoresAKilledDaemonsShield(t *testing.T) {
	m := newMachine(t)
	before := m.snapshot()
	if err := m.shield(nil).Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	s := m.shield(nil)
	if err := s.Raise(ctx, cpu0); !errors.Is(err, ErrLeftover) {
		t.Errorf("Raise over a leftover: %v, want ErrLeftover", err)
	}
	m.want(confined)
	if found, err := s.RestoreLeftover(ctx); !found || err != nil {
		t.Fatalf("RestoreLeftover: %v, %v", found, err)
	}
	m.wantSnapshot(before)
	if s.Raised() || m.stateExists() {
		t.Error("raised or state file left")
	}
	if found, err := s.RestoreLeftover(ctx); found || err != nil {
		t.Errorf("RestoreLeftover with no state file: %v, %v", found, err)
	}
}

// A state file that is not the daemon's own is never believed: nothing is
// written from it, and it stays for an administrator to look at.
func TestUntrustedStateFileIsNotBelieved(t *testing.T) {
	for name, plant := range map[string]func(m *machine){
		"writable by others": func(m *machine) { os.Chmod(m.state, 0o666) },
		"a symlink": func(m *machine) {
			real := m.state + ".real"
			os.Rename(m.state, real)
			os.Symlink(real, m.state)
		},
		"two links": func(m *machine) { os.Link(m.state, m.state+".other") },
		"another user's": func(m *machine) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to make a file of another user")
			}
			os.Chown(m.state, 65534, 65534)
		},
	} {
		t.Run(name, func(t *testing.T) {
			m := newMachine(t)
			if err := m.shield(nil).Raise(ctx, cpu0); err != nil {
				t.Fatal(err)
			}
			plant(m)
			s := m.shield(nil)
			if found, err := s.RestoreLeftover(ctx); !found || !errors.Is(err, ErrState) || !errors.Is(err, ownfile.ErrUntrusted) {
				t.Errorf("RestoreLeftover: %v, %v; want ErrState and ErrUntrusted", found, err)
			}
			if found, err := s.Adopt(); !found || !errors.Is(err, ErrState) {
				t.Errorf("Adopt: %v, %v; want ErrState", found, err)
			}
			if s.Raised() || !m.stateExists() {
				t.Errorf("raised %v, state file %v", s.Raised(), m.stateExists())
			}
			m.want(confined)
		})
	}
}

// State files a backend cannot believe are refused whole, before anything
// is written.
func TestBadStateFilesAreRefused(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":                 `{`,
		"a cgroup outside the set": `{"housekeeping":"0","backends":[{"backend":"cgroupfs","state":{"cgroups":[{"path":"../etc","cpus":"0"}]}}]}`,
		"perflock's own tree":      `{"housekeeping":"0","backends":[{"backend":"cgroupfs","state":{"cgroups":[{"path":"perflock","cpus":"0"}]}}]}`,
		"the exclusive side":       `{"housekeeping":"0","backends":[{"backend":"cgroupfs","state":{"cgroups":[{"path":"perflock/exclusive","cpus":"0"}]}}]}`,
		"an IRQ without CPUs":      `{"housekeeping":"0","backends":[{"backend":"irq","state":{"irqs":[{"irq":24,"cpus":""}]}}]}`,
		"an unknown field":         `{"housekeeping":"0","backends":[{"backend":"workqueue","state":{"cpumask":"0-3","x":1}}]}`,
		"a bad CPU list":           `{"housekeeping":"0","backends":[{"backend":"workqueue","state":{"cpumask":"0-"}}]}`,
		"a backend twice":          `{"housekeeping":"0","backends":[{"backend":"irq","state":{"irqs":[]}},{"backend":"irq","state":{"irqs":[]}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			m := newMachine(t)
			before := m.snapshot()
			m.writeFile(m.state, content)
			if found, err := m.shield(nil).RestoreLeftover(ctx); !found || !errors.Is(err, ErrState) {
				t.Errorf("RestoreLeftover: %v, %v; want ErrState", found, err)
			}
			m.wantSnapshot(before)
			if !m.stateExists() {
				t.Error("bad state file removed")
			}
		})
	}
}

// A state file naming a backend the Shield lacks is not adopted, and what
// the Shield has is restored while the rest stays.
func TestStateFileOfAnUnknownBackend(t *testing.T) {
	m := newMachine(t)
	b := m.backends(nil)
	if err := New(m.state, b.irq, b.wq).WithOnline(m.online).Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	s := New(m.state, m.backends(nil).irq).WithOnline(m.online)
	if found, err := s.Adopt(); !found || !errors.Is(err, ErrUnknownBackend) || s.Raised() {
		t.Errorf("Adopt: %v, %v, raised %v; want ErrUnknownBackend, not raised", found, err, s.Raised())
	}
	if found, err := s.RestoreLeftover(ctx); !found || !errors.Is(err, ErrUnknownBackend) {
		t.Errorf("RestoreLeftover: %v, %v; want ErrUnknownBackend", found, err)
	}
	m.want(map[string]string{"irq/24/smp_affinity_list": "0-3", "workqueue/cpumask": "1"})
	if st := readState(t, m.state); len(st.Backends) != 1 || st.Backends[0].Backend != "workqueue" {
		t.Errorf("state file keeps %+v, want only workqueue", st.Backends)
	}
	if found, err := New(m.state, m.backends(nil).wq).WithOnline(m.online).RestoreLeftover(ctx); !found || err != nil {
		t.Errorf("RestoreLeftover with the workqueue: %v, %v", found, err)
	}
	m.want(map[string]string{"workqueue/cpumask": "f"})
}

func TestCheckHousekeeping(t *testing.T) {
	online := cpuset.MustParse("0-3")
	for _, tc := range []struct {
		hk   string
		want string // in the error; "" for none
	}{
		{"0", ""},
		{"0-2", ""},
		{"3", ""},
		{"", "none given: give the CPUs the machine's other work keeps while a job runs, such as 0"},
		{"0-3", "0-3 is every online CPU, which leaves the job none of its own: give fewer, such as 0"},
		{"2,4-5", "CPUs 4-5 are not online (online: 0-3): give online CPUs, such as 0"},
	} {
		err := CheckHousekeeping(cpuset.MustParse(tc.hk), online)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckHousekeeping(%q): %v", tc.hk, err)
		case tc.want != "" && (!errors.Is(err, ErrHousekeeping) || !strings.Contains(fmt.Sprint(err), tc.want)):
			t.Errorf("CheckHousekeeping(%q): %v, want ErrHousekeeping saying %q", tc.hk, err, tc.want)
		}
	}
	if err := CheckHousekeeping(cpuset.MustParse("2"), cpuset.MustParse("2-3")); err != nil {
		t.Error(err)
	}
	if err := CheckHousekeeping(cpuset.Set{}, cpuset.MustParse("2-3")); !strings.Contains(fmt.Sprint(err), "such as 2") {
		t.Errorf("suggestion with CPU 0 offline: %v", err)
	}
}

// Raise with housekeeping CPUs that cannot be changes nothing.
func TestRaiseRefusesBadHousekeepingCPUs(t *testing.T) {
	m := newMachine(t)
	before := m.snapshot()
	s := m.shield(nil)
	for _, hk := range []string{"", "0-3", "7"} {
		if err := s.Raise(ctx, cpuset.MustParse(hk)); !errors.Is(err, ErrHousekeeping) {
			t.Errorf("Raise(%q): %v, want ErrHousekeeping", hk, err)
		}
		if err := s.Check(ctx, cpuset.MustParse(hk)); !errors.Is(err, ErrHousekeeping) {
			t.Errorf("Check(%q): %v, want ErrHousekeeping", hk, err)
		}
	}
	m.wantSnapshot(before)
	if s.Raised() || m.stateExists() {
		t.Error("raised")
	}
	if err := s.Check(ctx, cpu0); err != nil {
		t.Errorf("Check(0): %v", err)
	}
}

func TestCancelledRaiseChangesNothing(t *testing.T) {
	m := newMachine(t)
	before := m.snapshot()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.shield(nil).Raise(cctx, cpu0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Raise: %v", err)
	}
	m.wantSnapshot(before)
	if m.stateExists() {
		t.Error("state file written")
	}
}

// A state file in a folder that does not exist yet is made with it.
func TestRaiseMakesTheStateFolder(t *testing.T) {
	m := newMachine(t)
	m.state = filepath.Join(t.TempDir(), "a", "b", "shield.json")
	s := m.shield(nil)
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(m.state); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("state file: %v, %v", fi, err)
	}
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTwoBackendsOfOneNamePanic(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New accepted two backends named irq")
		}
	}()
	New("x", NewIRQ(""), NewIRQ(""))
}
