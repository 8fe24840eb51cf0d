package shield

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/internal/cpuset"
)

// IRQs that refuse the mask (per-CPU, kernel-managed, out of vectors) and
// IRQs whose file is read-only are left where they are and counted; the
// shield holds all the same.
func TestIRQRefusalsAndUnwritableIRQsAreCountedNotFatal(t *testing.T) {
	m := newMachine(t)
	os.Chmod(filepath.Join(m.irq, "1", "smp_affinity_list"), 0o444)
	var writes []string
	s := m.shield(func(p, v string) error {
		if strings.Contains(p, "/irq/") {
			writes = append(writes, strings.TrimPrefix(p, m.irq+"/")+"="+v)
		}
		switch {
		case strings.HasSuffix(p, "irq/0/smp_affinity_list"):
			return &fs.PathError{Op: "write", Path: p, Err: unix.EIO}
		case strings.HasSuffix(p, "irq/25/smp_affinity_list") && v == "0":
			return &fs.PathError{Op: "write", Path: p, Err: unix.ENOSPC}
		}
		return nil
	})
	before := m.snapshot()
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	m.want(map[string]string{"irq/0/smp_affinity_list": "0-3", "irq/1/smp_affinity_list": "0-3", "irq/24/smp_affinity_list": "0", "irq/25/smp_affinity_list": "0-3"})
	report := strings.Join(s.Report(), "\n")
	if want := "irq: 1 IRQs moved to CPUs 0, 2 refused (IRQ 0, 25: per-CPU or kernel-managed, they stay where they are), 1 not writable"; !strings.Contains(report, want) {
		t.Errorf("Report:\n%s\nwant %q", report, want)
	}
	writes = nil
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	m.wantSnapshot(before)
	// Restore writes only what Confine changed.
	if want := []string{"24/smp_affinity_list=0-3", "default_smp_affinity=f"}; !slices.Equal(writes, want) {
		t.Errorf("Lower wrote %q, want %q", writes, want)
	}
}

// An IRQ freed during the run is skipped by Restore.
func TestIRQFreedDuringTheRunIsSkipped(t *testing.T) {
	m := newMachine(t)
	s := m.shield(nil)
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(m.irq, "24"))
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	m.want(map[string]string{"irq/25/smp_affinity_list": "0-3"})
}

// Any other failed IRQ write fails the shield, and is rolled back.
func TestIRQOtherWriteErrorsFailTheShield(t *testing.T) {
	m := newMachine(t)
	before := m.snapshot()
	s := m.shield(func(p, v string) error {
		if strings.HasSuffix(p, "irq/25/smp_affinity_list") && v == "0" {
			return &fs.PathError{Op: "write", Path: p, Err: unix.EINVAL}
		}
		return nil
	})
	if err := s.Raise(ctx, cpu0); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Raise: %v, want EINVAL", err)
	}
	m.wantSnapshot(before)
}

func TestIRQCheck(t *testing.T) {
	m := newMachine(t)
	if err := NewIRQ(m.irq).Check(ctx); err != nil {
		t.Errorf("Check: %v", err)
	}
	for _, n := range []string{"0", "1", "24", "25"} {
		os.Chmod(filepath.Join(m.irq, n, "smp_affinity_list"), 0o444)
	}
	if err := NewIRQ(m.irq).Check(ctx); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "may be written") {
		t.Errorf("Check with read-only IRQs: %v, want ErrUnsupported", err)
	}
	if err := NewIRQ(filepath.Join(m.root, "absent")).Check(ctx); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Check without an IRQ folder: %v, want ErrUnsupported", err)
	}
}

// The workqueue mask saved is the one requested, where the kernel shows
// it: the mask itself may show it less the CPUs isolated at boot.
func TestWorkqueueSavesTheRequestedMask(t *testing.T) {
	m := newMachine(t)
	m.writeFile(m.wq, "3")
	m.writeFile(m.wq+"_requested", "ff")
	b := m.backends(nil)
	s := New(m.state, b.wq).WithOnline(m.online)
	if err := s.Raise(ctx, cpuset.MustParse("1")); err != nil {
		t.Fatal(err)
	}
	m.want(map[string]string{"workqueue/cpumask": "2"})
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	m.want(map[string]string{"workqueue/cpumask": "ff"})
}

func TestWorkqueueCheck(t *testing.T) {
	m := newMachine(t)
	if err := NewWorkqueue(m.wq).Check(ctx); err != nil {
		t.Errorf("Check: %v", err)
	}
	os.Chmod(m.wq, 0o444)
	if err := NewWorkqueue(m.wq).Check(ctx); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Check of a read-only mask: %v, want ErrUnsupported", err)
	}
	if err := NewWorkqueue(filepath.Join(m.root, "absent")).Check(ctx); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "absent") {
		t.Errorf("Check without the mask: %v, want ErrUnsupported naming it", err)
	}
}

// kernelCgroup makes the fake cgroup tree act like the kernel where the
// cpuset controller is enabled or disabled in a subtree_control: the
// children gain or lose their cpuset.cpus, and the words change.
func kernelCgroup(t *testing.T, writes *[]string) func(p, v string) error {
	return func(p, v string) error {
		*writes = append(*writes, filepath.Base(filepath.Dir(p))+"/"+filepath.Base(p)+"="+strings.TrimSpace(v))
		if filepath.Base(p) != "cgroup.subtree_control" {
			return nil
		}
		dir := filepath.Dir(p)
		b, _ := os.ReadFile(p)
		words := strings.Fields(string(b))
		es, _ := os.ReadDir(dir)
		switch v {
		case "+cpuset":
			words = append(words, "cpuset")
			for _, e := range es {
				if e.IsDir() {
					os.WriteFile(filepath.Join(dir, e.Name(), "cpuset.cpus"), nil, 0o644)
				}
			}
		case "-cpuset":
			words = slices.DeleteFunc(words, func(w string) bool { return w == "cpuset" })
			for _, e := range es {
				os.Remove(filepath.Join(dir, e.Name(), "cpuset.cpus"))
			}
		}
		if err := os.WriteFile(p, []byte(strings.Join(words, " ")+"\n"), 0o644); err != nil {
			return err
		}
		return errHandled
	}
}

// Where a cgroup on the way does not enable cpuset for its children,
// Confine enables it and Restore disables it again.
func TestCgroupfsEnablesCpusetWhereMissingAndDisablesItAfter(t *testing.T) {
	m := newMachine(t)
	m.writeFile(filepath.Join(m.cg, "cgroup.subtree_control"), "cpu")
	m.writeFile(filepath.Join(m.cg, "perflock", "cgroup.subtree_control"), "")
	for _, p := range []string{"system", "user", "perflock", "perflock/exclusive", "perflock/shared"} {
		os.Remove(filepath.Join(m.cg, p, "cpuset.cpus"))
	}
	before := m.snapshot()
	var writes []string
	s := m.shield(kernelCgroup(t, &writes))
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	m.want(map[string]string{"cgroup/system/cpuset.cpus": "0", "cgroup/user/cpuset.cpus": "0", "cgroup/perflock/shared/cpuset.cpus": "0", "cgroup/perflock/exclusive/cpuset.cpus": "", "cgroup/perflock/cpuset.cpus": ""})
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	m.wantSnapshot(before)
	var cg []string
	for _, w := range writes {
		if strings.Contains(w, "cgroup.") || strings.Contains(w, "cpuset.") {
			cg = append(cg, w)
		}
	}
	want := []string{
		"cgroup/cgroup.subtree_control=+cpuset", "perflock/cgroup.subtree_control=+cpuset",
		"perflock/cpuset.cpus=0", "system/cpuset.cpus=0", "user/cpuset.cpus=0", "shared/cpuset.cpus=0",
		"perflock/cpuset.cpus=", "system/cpuset.cpus=", "user/cpuset.cpus=", "shared/cpuset.cpus=",
		"perflock/cgroup.subtree_control=-cpuset", "cgroup/cgroup.subtree_control=-cpuset",
	}
	// The fake's top-level "perflock" is the tree: never written. Drop
	// the expected lines for it (kept above to read as the sequence).
	want = slices.DeleteFunc(want, func(w string) bool { return strings.HasPrefix(w, "perflock/cpuset.cpus") })
	if !slices.Equal(cg, want) {
		t.Errorf("writes:\n%s\nwant:\n%s", strings.Join(cg, "\n"), strings.Join(want, "\n"))
	}
}

// A tree deeper in the hierarchy keeps every CPU along its way: the
// siblings of its ancestors are confined instead.
func TestCgroupfsNestedTreeConfinesTheSiblingsOnItsWay(t *testing.T) {
	m := newMachine(t)
	for p, v := range map[string]string{
		"cgroup/srv/cpuset.cpus":                        "",
		"cgroup/srv/cgroup.subtree_control":             "cpuset",
		"cgroup/srv/web/cpuset.cpus":                    "2-3",
		"cgroup/srv/perflock/cpuset.cpus":               "",
		"cgroup/srv/perflock/cgroup.subtree_control":    "cpuset",
		"cgroup/srv/perflock/exclusive/cpuset.cpus":     "",
		"cgroup/srv/perflock/shared/cpuset.cpus":        "",
		"cgroup/srv/perflock/shared/s-1/cpuset.cpus":    "",
		"cgroup/srv/perflock/exclusive/x-1/cpuset.cpus": "",
	} {
		m.writeFile(filepath.Join(m.root, p), v)
	}
	before := m.snapshot()
	cg := NewCgroupfs(m.cg, "srv/perflock")
	cg.isCgroup2 = func(string) error { return nil }
	cg.proc = m.proc
	s := New(m.state, cg).WithOnline(m.online)
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	m.want(map[string]string{
		"cgroup/system/cpuset.cpus":                     "0",
		"cgroup/user/cpuset.cpus":                       "0",
		"cgroup/perflock/cpuset.cpus":                   "0", // another tree, here
		"cgroup/srv/cpuset.cpus":                        "",
		"cgroup/srv/web/cpuset.cpus":                    "0",
		"cgroup/srv/perflock/cpuset.cpus":               "",
		"cgroup/srv/perflock/exclusive/cpuset.cpus":     "",
		"cgroup/srv/perflock/exclusive/x-1/cpuset.cpus": "",
		"cgroup/srv/perflock/shared/cpuset.cpus":        "0",
	})
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	m.wantSnapshot(before)
}

// A cgroup removed during the run is skipped by Restore.
func TestCgroupfsCgroupRemovedDuringTheRunIsSkipped(t *testing.T) {
	m := newMachine(t)
	s := m.shield(nil)
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(m.cg, "system"))
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	m.want(map[string]string{"cgroup/user/cpuset.cpus": "0-1"})
}

func TestCgroupfsCheck(t *testing.T) {
	m := newMachine(t)
	cg := m.backends(nil).cg
	if err := cg.Check(ctx); err != nil {
		t.Errorf("Check: %v", err)
	}
	m.writeFile(filepath.Join(m.cg, "cgroup.controllers"), "cpu io memory pids")
	err := cg.Check(ctx)
	if want := fmt.Sprintf("shield: cgroupfs: the cgroup2 hierarchy at %s offers no cpuset controller (a hybrid cgroup setup", m.cg); !errors.Is(err, ErrUnsupported) || !strings.HasPrefix(fmt.Sprint(err), want) {
		t.Errorf("Check without cpuset: %v, want ErrUnsupported starting %q", err, want)
	}
	if _, err := cg.Save(ctx); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Save without cpuset: %v, want ErrUnsupported", err)
	}
	for _, tree := range []string{"", ".", "/abs", "../up", "a//b"} {
		c := NewCgroupfs(m.cg, tree)
		c.isCgroup2 = func(string) error { return nil }
		if err := c.Check(ctx); tree != "" && err == nil {
			t.Errorf("Check with tree %q passed", tree)
		}
	}
	// The real statfs check: a temporary folder is no cgroup2 mount.
	if err := NewCgroupfs(m.cg, "").Check(ctx); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "is not a cgroup2 hierarchy") {
		t.Errorf("Check of a plain folder: %v, want ErrUnsupported", err)
	}
}

// Linux refuses to empty the cpuset.cpus of a cgroup with processes: it
// gets every possible CPU back instead, the same in effect.
func TestCgroupfsPopulatedCgroupGetsEveryPossibleCPUBack(t *testing.T) {
	m := newMachine(t)
	s := m.shield(func(p, v string) error {
		if strings.HasSuffix(p, "system/cpuset.cpus") && strings.TrimSpace(v) == "" {
			return &fs.PathError{Op: "write", Path: p, Err: unix.ENOSPC}
		}
		return nil
	})
	if err := s.Raise(ctx, cpu0); err != nil {
		t.Fatal(err)
	}
	if err := s.Lower(ctx); err != nil {
		t.Fatal(err)
	}
	m.want(map[string]string{"cgroup/system/cpuset.cpus": "0-7", "cgroup/user/cpuset.cpus": "0-1", "cgroup/perflock/shared/cpuset.cpus": ""})
}
