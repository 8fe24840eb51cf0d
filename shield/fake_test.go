package shield

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/perflock/perflock/internal/cpuset"
)

// machine is a fake of what the file backends write, in a temporary
// folder: 4 online CPUs of 8 possible; /proc/irq with IRQs 0, 1, 24 and
// 25 on CPUs 0-3; the workqueue cpumask; a cgroup2 tree offering cpuset with the
// top-level cgroups "system" (no CPUs of its own), "user" (an
// administrator's 0-1) and perflock's tree (exclusive/, shared/); and a
// /proc holding PID 1 in the root cgroup.
type machine struct {
	t                 *testing.T
	root              string
	online, possible  string
	irq, wq, cg, proc string
	state             string
}

func newMachine(t *testing.T) *machine {
	t.Helper()
	root := t.TempDir()
	m := &machine{
		t: t, root: root,
		online:   filepath.Join(root, "online"),
		possible: filepath.Join(root, "possible"),
		irq:      filepath.Join(root, "irq"),
		wq:       filepath.Join(root, "workqueue", "cpumask"),
		cg:       filepath.Join(root, "cgroup"),
		proc:     filepath.Join(root, "proc"),
		state:    filepath.Join(root, "run", "shield.json"),
	}
	files := map[string]string{
		m.online:   "0-3",
		m.possible: "0-7",
		filepath.Join(m.irq, "default_smp_affinity"): "f",
		m.wq: "f",
		filepath.Join(m.cg, "cgroup.controllers"):                   "cpuset cpu io memory pids",
		filepath.Join(m.cg, "cgroup.subtree_control"):               "cpuset cpu",
		filepath.Join(m.cg, "cgroup.procs"):                         "1\n2",
		filepath.Join(m.cg, "system", "cpuset.cpus"):                "",
		filepath.Join(m.cg, "system", "cgroup.subtree_control"):     "",
		filepath.Join(m.cg, "user", "cpuset.cpus"):                  "0-1",
		filepath.Join(m.cg, "perflock", "cpuset.cpus"):              "",
		filepath.Join(m.cg, "perflock", "cgroup.subtree_control"):   "cpuset cpu",
		filepath.Join(m.cg, "perflock", "exclusive", "cpuset.cpus"): "",
		filepath.Join(m.cg, "perflock", "shared", "cpuset.cpus"):    "",
		filepath.Join(m.proc, "1", "cmdline"):                       "init\x00",
		filepath.Join(m.proc, "2", "cmdline"):                       "", // a kernel thread
	}
	for _, n := range []string{"0", "1", "24", "25"} {
		files[filepath.Join(m.irq, n, "smp_affinity_list")] = "0-3"
	}
	for p, v := range files {
		m.writeFile(p, v)
	}
	return m
}

func (m *machine) writeFile(p, v string) {
	m.t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if v != "" {
		v += "\n"
	}
	if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
		m.t.Fatal(err)
	}
}

func (m *machine) read(rel string) string {
	m.t.Helper()
	b, err := os.ReadFile(filepath.Join(m.root, rel))
	if err != nil {
		m.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// snapshot is every file of the fake but the state file, trimmed.
func (m *machine) snapshot() map[string]string {
	m.t.Helper()
	snap := map[string]string{}
	filepath.WalkDir(m.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(p, filepath.Dir(m.state)) {
			return err
		}
		b, _ := os.ReadFile(p)
		rel, _ := filepath.Rel(m.root, p)
		snap[rel] = strings.TrimSpace(string(b))
		return nil
	})
	return snap
}

// wantSnapshot fails the test where the fake differs from before.
func (m *machine) wantSnapshot(before map[string]string) {
	m.t.Helper()
	after := m.snapshot()
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if after[k] != before[k] {
			m.t.Errorf("%s = %q, want %q as before", k, after[k], before[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			m.t.Errorf("%s is new", k)
		}
	}
}

// want fails the test unless each file (relative to the fake) holds its
// value.
func (m *machine) want(files map[string]string) {
	m.t.Helper()
	for _, k := range slices.Sorted(maps.Keys(files)) {
		if got := m.read(k); got != files[k] {
			m.t.Errorf("%s = %q, want %q", k, got, files[k])
		}
	}
}

func (m *machine) stateExists() bool {
	_, err := os.Lstat(m.state)
	return err == nil
}

// confined is what the fake holds while the shield is raised with
// housekeeping CPU 0.
var confined = map[string]string{
	"irq/0/smp_affinity_list":               "0",
	"irq/24/smp_affinity_list":              "0",
	"irq/default_smp_affinity":              "1",
	"workqueue/cpumask":                     "1",
	"cgroup/system/cpuset.cpus":             "0",
	"cgroup/user/cpuset.cpus":               "0",
	"cgroup/perflock/shared/cpuset.cpus":    "0",
	"cgroup/perflock/exclusive/cpuset.cpus": "",
	"cgroup/perflock/cpuset.cpus":           "",
}

// errHandled, returned by a fail function, says it made the write itself.
var errHandled = errors.New("handled")

// backends are the three file backends on the fake; fail, when not nil,
// sees every write first, and makes it fail where it returns an error.
type backends struct {
	irq *IRQ
	wq  *Workqueue
	cg  *Cgroupfs
}

func (m *machine) backends(fail func(path, value string) error) backends {
	write := func(p, v string) error {
		if fail != nil {
			if err := fail(p, v); errors.Is(err, errHandled) {
				return nil
			} else if err != nil {
				return err
			}
		}
		return writeAttr(p, v)
	}
	b := backends{irq: NewIRQ(m.irq), wq: NewWorkqueue(m.wq), cg: NewCgroupfs(m.cg, "")}
	b.irq.write, b.wq.write, b.cg.write = write, write, write
	b.cg.isCgroup2 = func(string) error { return nil }
	b.cg.proc, b.cg.possible = m.proc, m.possible
	return b
}

// shield is a Shield on the fake with the three file backends.
func (m *machine) shield(fail func(path, value string) error) *Shield {
	b := m.backends(fail)
	return New(m.state, b.cg, b.irq, b.wq).WithOnline(m.online)
}

var cpu0 = cpuset.MustParse("0")
