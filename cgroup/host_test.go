package cgroup

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the processes placed in job cgroups: with helperEnv set, TestMain
// runs the helper it names instead of the tests.
const helperEnv = "PERFLOCK_CGROUP_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "sleep": // do nothing until killed
		time.Sleep(time.Hour)
		os.Exit(0)
	case "tick": // write an increasing counter to stdout, one line per millisecond, until killed
		w := bufio.NewWriter(os.Stdout)
		for i := 0; ; i++ {
			fmt.Fprintln(w, i)
			if w.Flush() != nil {
				os.Exit(1)
			}
			time.Sleep(time.Millisecond)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// Long enough never to fire on a healthy host, however loaded: a safety net, not a timing.
const safetyTimeout = 20 * time.Second

// requireCgroup2 skips the test unless it runs as root with a cgroup2 hierarchy mounted, and
// returns the mount point.
func requireCgroup2(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("host-tier cgroup test: needs root to create cgroups (run go test as root)")
	}
	mount, err := Mountpoint()
	if err != nil {
		t.Skipf("host-tier cgroup test: %v", err)
	}
	return mount
}

// newTestTree opens a tree of its own for the test, named perflock-test-<random>, and removes it
// (killing whatever is left in it) when the test ends.
func newTestTree(t *testing.T) *Tree {
	t.Helper()
	mount := requireCgroup2(t)
	name := testTreeName(t)
	t.Cleanup(func() { removeCgroupTree(t, filepath.Join(mount, name)) })
	tree, err := Open(mount, name)
	if err != nil {
		t.Fatalf("Open(%s, %s): %v", mount, name, err)
	}
	return tree
}

func testTreeName(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "perflock-test-" + hex.EncodeToString(b)
}

// removeCgroupTree removes the cgroup dir and its descendants (RemoveTree), failing the test if
// it cannot.
func removeCgroupTree(t *testing.T, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	if err := RemoveTree(ctx, dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// startHelper starts the test binary as helper mode, not yet in any job, and kills and reaps it
// when the test ends. For "tick" it also returns the helper's output.
func startHelper(t *testing.T, mode string) (*exec.Cmd, *os.File) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	var r *os.File
	if mode == "tick" {
		var w *os.File
		r, w, err = os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout = w
		defer w.Close()
		t.Cleanup(func() { r.Close() })
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, r
}

// addHelper starts a helper and adds it to job j.
func addHelper(t *testing.T, j *Job, mode string) (*exec.Cmd, *os.File) {
	t.Helper()
	cmd, r := startHelper(t, mode)
	if err := j.Add(cmd.Process.Pid); err != nil {
		t.Fatalf("Add: %v", err)
	}
	return cmd, r
}

// ticks reports whether the tick helper writing to r produces output within d.
func ticks(t *testing.T, r *os.File, d time.Duration) bool {
	t.Helper()
	buf := make([]byte, 4096)
	if err := r.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	n, err := r.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if err != nil {
		t.Fatalf("reading helper output: %v", err)
	}
	return n > 0
}

// drain discards what the helper writing to r has written so far, without waiting for more: one
// read takes all a pipe holds (at most 64 KiB by default).
func drain(t *testing.T, r *os.File) {
	t.Helper()
	buf := make([]byte, 1<<20)
	if err := r.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("reading helper output: %v", err)
	}
}

func ctxWithSafety(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	t.Cleanup(cancel)
	return ctx
}

func mustEvents(t *testing.T, dir string) events {
	t.Helper()
	ev, err := readEvents(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestMountpointAgreesWithCgroupMode(t *testing.T) {
	got, err := Mountpoint()
	switch cgroups.Mode() {
	case cgroups.Unified:
		if err != nil || got != "/sys/fs/cgroup" {
			t.Fatalf("Mountpoint() = %q, %v; want /sys/fs/cgroup on a unified host", got, err)
		}
	case cgroups.Hybrid:
		if err != nil || got != "/sys/fs/cgroup/unified" {
			t.Fatalf("Mountpoint() = %q, %v; want /sys/fs/cgroup/unified on a hybrid host", got, err)
		}
	default:
		if err == nil {
			t.Skipf("cgroup2 mounted at a non-standard place, %s", got)
		}
		if !errors.Is(err, ErrNoCgroup2) {
			t.Fatalf("Mountpoint() error = %v, want ErrNoCgroup2", err)
		}
	}
}

func TestOpenCreatesTreeAndIsIdempotent(t *testing.T) {
	t.Parallel()
	mount := requireCgroup2(t)
	name := testTreeName(t) + "/nested"
	t.Cleanup(func() { removeCgroupTree(t, filepath.Join(mount, filepath.Dir(name))) })
	tree, err := Open(mount, name)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if tree.Path() != "/"+name || tree.Dir() != filepath.Join(mount, name) {
		t.Fatalf("Path, Dir = %q, %q; want /%s under %s", tree.Path(), tree.Dir(), name, mount)
	}
	for _, sub := range []string{"exclusive", "shared"} {
		if _, err := os.Stat(filepath.Join(tree.Dir(), sub, eventsFile)); err != nil {
			t.Errorf("child cgroup %s missing: %v", sub, err)
		}
	}
	if _, err := tree.NewJob(Exclusive, 1); err != nil {
		t.Fatal(err)
	}
	again, err := Open(mount, name)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	if _, err := again.NewJob(Exclusive, 1); !errors.Is(err, ErrJobExists) {
		t.Fatalf("NewJob with a used id: error = %v, want ErrJobExists", err)
	}
	if _, err := again.NewJob(Kind(0), 2); !errors.Is(err, ErrInvalidKind) {
		t.Fatalf("NewJob(Kind(0)): error = %v, want ErrInvalidKind", err)
	}
}

// openUnprivileged runs Open on an OS thread whose user ids are nobody's, so without root's
// capabilities. The thread is never unlocked: it exits with the goroutine, taking the changed
// credentials along, and no other goroutine ever runs on it. (setresuid(2) is called raw, since
// the Go wrappers change every thread of the process.)
func openUnprivileged(mount, name string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		const nobody = 65534
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, nobody, nobody, nobody); e != 0 {
			errc <- fmt.Errorf("setresuid: %w", e)
			return
		}
		_, err := Open(mount, name)
		errc <- err
	}()
	return <-errc
}

func TestOpenWithoutPrivilegeIsNotWritable(t *testing.T) {
	t.Parallel()
	mount := requireCgroup2(t)

	t.Run("new tree", func(t *testing.T) {
		name := testTreeName(t)
		t.Cleanup(func() { removeCgroupTree(t, filepath.Join(mount, name)) })
		if err := openUnprivileged(mount, name); !errors.Is(err, ErrNotWritable) {
			t.Fatalf("Open without privilege: error = %v, want ErrNotWritable", err)
		}
	})
	t.Run("tree made by root", func(t *testing.T) {
		tree := newTestTree(t)
		name := tree.Path()[1:]
		if err := openUnprivileged(mount, name); !errors.Is(err, ErrNotWritable) {
			t.Fatalf("Open without privilege: error = %v, want ErrNotWritable", err)
		}
	})
}

func TestJobHoldsAddedProcessUntilItExits(t *testing.T) {
	t.Parallel()
	tree := newTestTree(t)
	j, err := tree.NewJob(Exclusive, 42)
	if err != nil {
		t.Fatal(err)
	}
	if want := tree.Path() + "/exclusive/x-42"; j.Path() != want || j.Kind() != Exclusive || j.ID() != 42 {
		t.Fatalf("job = %v %d %q; want x 42 %q", j.Kind(), j.ID(), j.Path(), want)
	}
	if pop, err := j.Populated(); err != nil || pop {
		t.Fatalf("new job Populated() = %v, %v; want false", pop, err)
	}

	cmd, _ := addHelper(t, j, "sleep")
	pid := cmd.Process.Pid
	_, unified, err := cgroups.ParseCgroupFileUnified(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil || unified != j.Path() {
		t.Fatalf("/proc/%d/cgroup shows %q, %v; want %q", pid, unified, err, j.Path())
	}
	if pop, err := j.Populated(); err != nil || !pop {
		t.Fatalf("Populated() = %v, %v; want true", pop, err)
	}
	if pids, err := j.Pids(); err != nil || !slices.Equal(pids, []int{pid}) {
		t.Fatalf("Pids() = %v, %v; want [%d]", pids, err, pid)
	}
	if err := j.Remove(); !errors.Is(err, ErrJobBusy) {
		t.Fatalf("Remove of a populated job: error = %v, want ErrJobBusy", err)
	}

	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := j.WaitEmpty(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitEmpty while the process lives: error = %v, want context.DeadlineExceeded", err)
	}

	waited := make(chan error, 1)
	go func() { waited <- j.WaitEmpty(ctxWithSafety(t)) }()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("WaitEmpty after the process was killed: %v", err)
	}
	if pop, err := j.Populated(); err != nil || pop {
		t.Fatalf("Populated() after WaitEmpty = %v, %v; want false", pop, err)
	}
	if err := j.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(j.Dir()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("job cgroup still there after Remove: %v", err)
	}
	if err := j.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if err := j.WaitEmpty(ctxWithSafety(t)); err != nil {
		t.Fatalf("WaitEmpty on a removed job: %v", err)
	}
}

func TestFreezeSharedStopsSharedJobsUntilThaw(t *testing.T) {
	t.Parallel()
	tree := newTestTree(t)
	shared, err := tree.NewJob(Shared, 1)
	if err != nil {
		t.Fatal(err)
	}
	excl, err := tree.NewJob(Exclusive, 2)
	if err != nil {
		t.Fatal(err)
	}
	_, sharedOut := addHelper(t, shared, "tick")
	_, exclOut := addHelper(t, excl, "tick")
	if !ticks(t, sharedOut, safetyTimeout) {
		t.Fatal("shared helper does not run before the freeze")
	}

	if err := tree.FreezeShared(ctxWithSafety(t)); err != nil {
		t.Fatalf("FreezeShared: %v", err)
	}
	if frozen, err := tree.SharedFrozen(); err != nil || !frozen {
		t.Fatalf("SharedFrozen() after FreezeShared = %v, %v; want true", frozen, err)
	}
	if !mustEvents(t, shared.Dir()).Frozen {
		t.Fatal("shared job's cgroup.events does not say frozen 1")
	}
	drain(t, sharedOut)
	// Nothing to await here: the point is that nothing happens for a while.
	if ticks(t, sharedOut, 200*time.Millisecond) {
		t.Fatal("shared helper still runs after FreezeShared returned")
	}
	drain(t, exclOut)
	if !ticks(t, exclOut, safetyTimeout) {
		t.Fatal("exclusive helper stopped while the shared side was frozen")
	}
	if mustEvents(t, excl.Dir()).Frozen {
		t.Fatal("exclusive job frozen by FreezeShared")
	}

	if err := tree.ThawShared(ctxWithSafety(t)); err != nil {
		t.Fatalf("ThawShared: %v", err)
	}
	if frozen, err := tree.SharedFrozen(); err != nil || frozen {
		t.Fatalf("SharedFrozen() after ThawShared = %v, %v; want false", frozen, err)
	}
	if !ticks(t, sharedOut, safetyTimeout) {
		t.Fatal("shared helper does not run again after ThawShared")
	}
}

func TestFreezeSharedConfirmsWithNoSharedJobs(t *testing.T) {
	t.Parallel()
	tree := newTestTree(t)
	if err := tree.FreezeShared(ctxWithSafety(t)); err != nil {
		t.Fatalf("FreezeShared of an empty side: %v", err)
	}
	if frozen, err := tree.SharedFrozen(); err != nil || !frozen {
		t.Fatalf("SharedFrozen() = %v, %v; want true", frozen, err)
	}
	// Freezing again is a no-op that confirms at once.
	if err := tree.FreezeShared(ctxWithSafety(t)); err != nil {
		t.Fatalf("second FreezeShared: %v", err)
	}
	j, err := tree.NewJob(Shared, 7)
	if err != nil {
		t.Fatal(err)
	}
	if !mustEvents(t, j.Dir()).Frozen {
		t.Fatal("shared job created under a frozen shared side is not frozen")
	}
	if err := tree.ThawShared(ctxWithSafety(t)); err != nil {
		t.Fatalf("ThawShared: %v", err)
	}
	if mustEvents(t, j.Dir()).Frozen {
		t.Fatal("shared job still frozen after ThawShared")
	}
}

func TestFreezeSharedReturnsWhenContextEnds(t *testing.T) {
	t.Parallel()
	tree := newTestTree(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Thawing an unfrozen side is already done, so it succeeds even with a dead context.
	if err := tree.ThawShared(ctx); err != nil {
		t.Fatalf("ThawShared with nothing to do: %v", err)
	}
	// A job with a frozen ancestor outside the shared side can never be thawed by ThawShared.
	if err := writeFile(filepath.Join(tree.Dir(), freezeFile), "1"); err != nil {
		t.Fatal(err)
	}
	if err := tree.FreezeShared(ctxWithSafety(t)); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := tree.ThawShared(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ThawShared under a frozen ancestor: error = %v, want context.DeadlineExceeded", err)
	}
}

func TestKillEmptiesJobWithSeveralProcesses(t *testing.T) {
	t.Parallel()
	requireCgroup2(t)
	tests := []struct {
		name   string
		kind   Kind
		freeze bool
		kill   func(*Job) error
	}{
		{"cgroup.kill", Exclusive, false, (*Job).Kill},
		{"signal each pid, for kernels before 5.14", Exclusive, false, (*Job).killEach},
		{"frozen shared job", Shared, true, (*Job).Kill},
		{"frozen shared job, signal each pid", Shared, true, (*Job).killEach},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tree := newTestTree(t)
			j, err := tree.NewJob(tt.kind, 9)
			if err != nil {
				t.Fatal(err)
			}
			var cmds []*exec.Cmd
			for range 3 {
				cmd, _ := addHelper(t, j, "sleep")
				cmds = append(cmds, cmd)
			}
			if tt.freeze {
				if err := tree.FreezeShared(ctxWithSafety(t)); err != nil {
					t.Fatal(err)
				}
			}
			if pids, err := j.Pids(); err != nil || len(pids) != 3 {
				t.Fatalf("Pids() = %v, %v; want 3 processes", pids, err)
			}
			if err := tt.kill(j); err != nil {
				t.Fatalf("kill: %v", err)
			}
			if err := j.WaitEmpty(ctxWithSafety(t)); err != nil {
				t.Fatalf("WaitEmpty after kill: %v", err)
			}
			for _, cmd := range cmds {
				err := cmd.Wait()
				var exit *exec.ExitError
				if !errors.As(err, &exit) || !killedBy(exit, syscall.SIGKILL) {
					t.Errorf("helper %d ended with %v, want killed by SIGKILL", cmd.Process.Pid, err)
				}
			}
			if pids, err := j.Pids(); err != nil || len(pids) != 0 {
				t.Fatalf("Pids() after kill = %v, %v; want none", pids, err)
			}
			if err := j.Remove(); err != nil {
				t.Fatalf("Remove after kill: %v", err)
			}
			if err := j.Kill(); err != nil {
				t.Fatalf("Kill of a removed job: %v", err)
			}
		})
	}
}

func TestJobsListsJobsAndIgnoresForeignCgroups(t *testing.T) {
	t.Parallel()
	tree := newTestTree(t)
	x3, err := tree.NewJob(Exclusive, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{20, 10} {
		if _, err := tree.NewJob(Shared, id); err != nil {
			t.Fatal(err)
		}
	}
	cmd, _ := addHelper(t, x3, "sleep")
	for _, foreign := range []string{"exclusive/other", "exclusive/s-4", "shared/x-5", "shared/s-007", "shared/s-"} {
		if err := os.Mkdir(filepath.Join(tree.Dir(), foreign), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	jobs, err := tree.Jobs()
	if err != nil {
		t.Fatalf("Jobs: %v", err)
	}
	type row struct {
		kind      Kind
		id        uint64
		path      string
		pids      []int
		populated bool
	}
	var got []row
	for _, j := range jobs {
		got = append(got, row{j.Job.Kind(), j.Job.ID(), j.Job.Path(), j.Pids, j.Populated})
	}
	want := []row{
		{Exclusive, 3, tree.Path() + "/exclusive/x-3", []int{cmd.Process.Pid}, true},
		{Shared, 10, tree.Path() + "/shared/s-10", nil, false},
		{Shared, 20, tree.Path() + "/shared/s-20", nil, false},
	}
	if !slices.EqualFunc(got, want, func(a, b row) bool {
		return a.kind == b.kind && a.id == b.id && a.path == b.path && slices.Equal(a.pids, b.pids) && a.populated == b.populated
	}) {
		t.Fatalf("Jobs() =\n%+v\nwant\n%+v", got, want)
	}

	// A listed job is a working handle: a restarted daemon kills and removes it.
	if err := jobs[0].Job.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := jobs[0].Job.WaitEmpty(ctxWithSafety(t)); err != nil {
		t.Fatal(err)
	}
	if err := jobs[0].Job.Remove(); err != nil {
		t.Fatal(err)
	}
}

func TestStatCountsCPUTime(t *testing.T) {
	t.Parallel()
	tree := newTestTree(t)
	j, err := tree.NewJob(Shared, 1)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := j.Stat(); err != nil || s.CPU != 0 {
		t.Fatalf("Stat() of a new job = %+v, %v; want zero CPU", s, err)
	}
	cmd, out := addHelper(t, j, "tick")
	for range 20 {
		if !ticks(t, out, safetyTimeout) {
			t.Fatal("helper does not run")
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	s, err := j.Stat()
	if err != nil || s.CPU <= 0 || s.User+s.System > s.CPU+time.Millisecond {
		t.Fatalf("Stat() after the helper ran = %+v, %v; want CPU > 0 and User+System ≈ CPU", s, err)
	}
	// With CPU time used, the numbers are containerd/cgroups' reading of cpu.stat (the cpu
	// controller need not be enabled: usage, user and system are always there). The job is empty,
	// so they no longer change, and the package's own parser must read the same.
	m, err := j.m.StatFiltered(cgroup2.StatCPU)
	if err != nil {
		t.Fatal(err)
	}
	if lib, ok := statFromMetrics(m); !ok || lib != s {
		t.Fatalf("library reading = %+v, %v; want %+v", lib, ok, s)
	}
	if own, err := j.readCPUStat(); err != nil || own != s {
		t.Fatalf("own reading of cpu.stat = %+v, %v; want %+v", own, err, s)
	}

	// The library reads a removed job's missing cpu.stat as zeros; Stat must still fail.
	if err := j.Remove(); err != nil {
		t.Fatal(err)
	}
	if s, err := j.Stat(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat() of a removed job = %+v, %v; want fs.ErrNotExist", s, err)
	}
}

func TestAddRefusesMissingProcess(t *testing.T) {
	t.Parallel()
	tree := newTestTree(t)
	j, err := tree.NewJob(Exclusive, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	var pidMax int
	if _, err := fmt.Sscan(string(b), &pidMax); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{pidMax, -1} { // no process has pid_max as its pid
		if err := j.Add(pid); !errors.Is(err, unix.ESRCH) {
			t.Errorf("Add(%d) error = %v, want ESRCH", pid, err)
		}
	}
	if pids, err := j.Pids(); err != nil || len(pids) != 0 {
		t.Fatalf("Pids() = %v, %v; want none", pids, err)
	}
	if err := j.Remove(); err != nil {
		t.Fatal(err)
	}
	if pids, err := j.Pids(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Pids() of a removed job = %v, %v; want fs.ErrNotExist", pids, err)
	}
}

// Not parallel: it counts the process's descriptors and goroutines, so nothing else may run.
func TestWaitsLeaveNoDescriptorOrGoroutine(t *testing.T) {
	tree := newTestTree(t)
	j, err := tree.NewJob(Shared, 1)
	if err != nil {
		t.Fatal(err)
	}
	addHelper(t, j, "sleep")

	countFDs := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	fds, goroutines := countFDs(), runtime.NumGoroutine()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for range 20 {
		if err := j.WaitEmpty(cancelled); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitEmpty(cancelled) = %v, want context.Canceled", err)
		}
		short, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		if err := j.WaitEmpty(short); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitEmpty(short) = %v, want context.DeadlineExceeded", err)
		}
		cancel()
		if err := tree.FreezeShared(ctxWithSafety(t)); err != nil {
			t.Fatal(err)
		}
		if err := tree.ThawShared(ctxWithSafety(t)); err != nil {
			t.Fatal(err)
		}
	}
	if n := countFDs(); n != fds {
		t.Errorf("open descriptors: %d before, %d after", fds, n)
	}
	if n := runtime.NumGoroutine(); n != goroutines {
		t.Errorf("goroutines: %d before, %d after", goroutines, n)
	}
}

func killedBy(exit *exec.ExitError, sig syscall.Signal) bool {
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}
