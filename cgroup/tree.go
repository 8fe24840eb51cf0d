// Package cgroup places perflock jobs in cgroup v2 cgroups and freezes background work while an
// exclusive job runs. It is the OS boundary of the cgroupfs driver.
//
// Layout, under a cgroup2 mount (see Mountpoint):
//
//	<name>/                  the Tree
//	<name>/exclusive/x-<id>  one cgroup per exclusive job
//	<name>/shared/s-<id>     one cgroup per shared job; freezing shared/ freezes them all
//
// The plain cgroup operations come from github.com/containerd/cgroups/v3: cgroups.Mode finds the
// standard cgroup2 mount, and each Job holds a cgroup2.Manager, which adds processes to the job
// (AddProc), lists them (Procs), kills them through cgroup.kill (Kill) and reads the job's CPU time
// (StatFiltered). Manager.Controllers reads what each level of the tree offers.
//
// What this package adds is what the library does not do, or does with a different contract:
//
//   - Confirmation. FreezeShared and ThawShared return once the kernel reports the state in
//     cgroup.events ("frozen 1"/"frozen 0"), and WaitEmpty once it reports "populated 0"; both wait
//     on inotify, without polling. Manager.Freeze only writes cgroup.freeze and reads the same
//     file back, which echoes the request, not the outcome: tasks may still be running.
//   - Exact errors. NewJob creates the job cgroup exclusively (ErrJobExists if the id was used;
//     NewManager is mkdir -p), and Remove is one rmdir (ErrJobBusy while processes remain, nil if
//     already gone; Manager.Delete returns neither, and retries with os.RemoveAll).
//   - Kill without cgroup.kill (Linux < 5.14) signals each pid until no new one appears, instead
//     of the library's fallback, which waits for each process and so would reap the daemon's own
//     children from under it. Killing a job that is gone is not an error.
//   - Controllers are enabled one at a time, only where offered, best effort (ToggleControllers
//     writes them all in one write, which the kernel refuses whole if any one is not offered).
//   - Discovery of the jobs of a restarted daemon (Tree.Jobs), and a non-standard cgroup2 mount
//     found in /proc/self/mountinfo.
//
// The package holds no state of its own: the file system is the state, so a restarted daemon
// finds its jobs again with Tree.Jobs. Values of Tree and Job are safe for concurrent use.
package cgroup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/internal/jobname"
)

// Mountpoint returns the directory where the cgroup2 hierarchy is mounted: /sys/fs/cgroup on a
// unified host, /sys/fs/cgroup/unified on a hybrid one (as cgroups.Mode of containerd/cgroups
// finds them), otherwise the first cgroup2 mount listed in /proc/self/mountinfo. It returns
// ErrNoCgroup2 when none is mounted.
func Mountpoint() (string, error) {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return preferredMounts[0], nil
	case cgroups.Hybrid:
		return preferredMounts[1], nil
	}
	// Legacy or unavailable at the standard place: cgroup2 may still be mounted elsewhere.
	const mountinfo = "/proc/self/mountinfo"
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoCgroup2, err)
	}
	defer f.Close()
	m, err := parseMountinfo(f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", mountinfo, err)
	}
	return m, nil
}

// Kind says which side of the tree a job runs on; its String ("x", "s") is
// the prefix of job cgroup names (package jobname).
type Kind = jobname.Kind

const (
	// Exclusive jobs run alone: while one runs, the shared side is frozen.
	Exclusive = jobname.Exclusive
	// Shared jobs run together as background work, in the freezable shared side.
	Shared = jobname.Shared
)

// subdir is the child of the tree that holds jobs of kind k.
func subdir(k Kind) string {
	if k == Exclusive {
		return "exclusive"
	}
	return "shared"
}

// Controllers enabled, when offered, for the tree and its children. All are optional.
var wantControllers = [...]string{"cpu", "cpuset", "memory", "pids"}

// Tree is perflock's subtree of a cgroup2 hierarchy: a cgroup with the children "exclusive" and
// "shared", which hold one cgroup per job.
type Tree struct {
	mount string // the cgroup2 mount point
	path  string // cgroup path, as /proc/PID/cgroup shows it: "/" + name
	dir   string // directory in the file system: mount + path
}

// Open returns the tree name (a relative path such as "perflock" or "system.slice/perflock")
// under mount, the cgroup2 mount point (see Mountpoint). It creates the tree and its children
// "exclusive" and "shared" where missing, and enables in each parent's cgroup.subtree_control those
// of cpu, cpuset, memory and pids the parent offers (best effort: failures there are ignored, and a
// host may offer none).
//
// It returns ErrInvalidName for a name that is empty, ".", absolute, not clean or climbing out with
// "..", or that containerd/cgroups refuses as a group path (one beginning with
// "sys/fs/cgroup"); ErrNoCgroup2 if mount
// is not a cgroup2 file system; ErrNotWritable if this process may not create the tree or write
// its interface files. On error no Tree is returned; directories already created are left (an
// empty cgroup costs nothing, and the next Open reuses it).
func Open(mount, name string) (*Tree, error) {
	if name == "" || name == "." || !filepath.IsLocal(name) || filepath.Clean(name) != name {
		return nil, fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	// Every job's cgroup2.Manager is loaded from a path under this one; the library refuses a
	// group path that looks like a file system path (prefix /sys/fs/cgroup). Checking the tree's
	// path here means that no job path can be refused later.
	cgPath := "/" + filepath.ToSlash(name)
	if err := cgroup2.VerifyGroupPath(cgPath); err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrInvalidName, name, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mount, &st); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNoCgroup2, mount, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, fmt.Errorf("%w: %s is not a cgroup2 mount", ErrNoCgroup2, mount)
	}

	t := &Tree{mount: mount, path: cgPath, dir: filepath.Join(mount, name)}
	parent := "/"
	for _, c := range strings.Split(cgPath[1:], "/") {
		enableControllers(mount, parent)
		parent = path.Join(parent, c)
		if err := mkdirCgroup(filepath.Join(mount, parent)); err != nil {
			return nil, err
		}
	}
	enableControllers(mount, t.path)
	for _, k := range [...]Kind{Exclusive, Shared} {
		dir := filepath.Join(t.dir, subdir(k))
		if err := mkdirCgroup(dir); err != nil {
			return nil, err
		}
		enableControllers(mount, path.Join(t.path, subdir(k)))
		for _, f := range [...]string{procsFile, freezeFile} {
			p := filepath.Join(dir, f)
			if err := unix.Faccessat(unix.AT_FDCWD, p, unix.W_OK, unix.AT_EACCESS); err != nil {
				if notWritable(err) {
					return nil, fmt.Errorf("%w: %s: %w", ErrNotWritable, p, err)
				}
				return nil, &fs.PathError{Op: "access", Path: p, Err: err}
			}
		}
	}
	return t, nil
}

// mkdirCgroup creates the cgroup dir unless it exists.
func mkdirCgroup(dir string) error {
	err := unix.Mkdir(dir, 0o755)
	switch {
	case err == nil || errors.Is(err, unix.EEXIST):
		return nil
	case notWritable(err):
		return fmt.Errorf("%w: %s: %w", ErrNotWritable, dir, err)
	default:
		return &fs.PathError{Op: "mkdir", Path: dir, Err: err}
	}
}

// enableControllers enables in the cgroup.subtree_control of cgroup group (a path under mount),
// one at a time, each wanted controller that the cgroup offers (Manager.Controllers) and has not
// enabled yet. Failures are ignored: a controller may be refused (a cgroup with processes of its
// own cannot delegate, for one), and none is required.
//
// Manager.ToggleControllers does not fit: it writes all controllers in one write, which the
// kernel refuses whole if any one of them is not offered at that level, and it writes every
// ancestor up to the root each time.
func enableControllers(mount, group string) {
	m, err := cgroup2.Load(group, cgroup2.WithMountpoint(mount))
	if err != nil {
		return
	}
	offered, err := m.Controllers()
	if err != nil {
		return
	}
	dir := filepath.Join(mount, group)
	enabled := readWords(filepath.Join(dir, subtreeFile))
	for _, c := range wantControllers {
		if slices.Contains(offered, c) && !slices.Contains(enabled, c) {
			_ = writeFile(filepath.Join(dir, subtreeFile), "+"+c)
		}
	}
}

// readWords returns the space-separated words of a file, or nil if it cannot be read.
func readWords(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// Path returns the tree's cgroup path relative to the mount, such as "/perflock".
func (t *Tree) Path() string { return t.path }

// Mount returns the cgroup2 mount point the tree is under.
func (t *Tree) Mount() string { return t.mount }

// Dir returns the tree's directory in the file system, such as "/sys/fs/cgroup/perflock".
func (t *Tree) Dir() string { return t.dir }

// NewJob creates the cgroup of job id, named "<kind>-<id>" in the tree's child for that kind (for
// example exclusive/x-42 or shared/s-43), and returns it empty. A Shared job gets the lowest CPU
// priority where the cpu controller allows it (cpu.idle=1, else cpu.weight=1; best effort). A
// Shared job created while the shared side is frozen starts frozen.
//
// It returns ErrInvalidKind for a kind other than Exclusive or Shared, ErrJobExists if that
// cgroup exists already (Jobs lists it), and ErrNotWritable if it cannot be created.
func (t *Tree) NewJob(kind Kind, id uint64) (*Job, error) {
	if !kind.Valid() {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKind, kind)
	}
	j, err := t.job(kind, id)
	if err != nil {
		return nil, err
	}
	// The directory is made here, exclusively, rather than by cgroup2.NewManager, which is
	// mkdir -p and so cannot tell a reused id from a new one. j.m was loaded for this path.
	if err := unix.Mkdir(j.dir, 0o755); err != nil {
		switch {
		case errors.Is(err, unix.EEXIST):
			return nil, fmt.Errorf("%w: %s", ErrJobExists, j.dir)
		case notWritable(err):
			return nil, fmt.Errorf("%w: %s: %w", ErrNotWritable, j.dir, err)
		default:
			return nil, &fs.PathError{Op: "mkdir", Path: j.dir, Err: err}
		}
	}
	if kind == Shared {
		// cgroup2.CPU has no cpu.idle; cpu.weight=1 is the fallback where cpu.idle is missing
		// (before Linux 5.15). Both files exist only with the cpu controller enabled here.
		if err := writeFile(filepath.Join(j.dir, "cpu.idle"), "1"); err != nil {
			weight := uint64(1)
			_ = j.m.Update(&cgroup2.Resources{CPU: &cgroup2.CPU{Weight: &weight}})
		}
	}
	return j, nil
}

// job returns the Job value for kind and id, whether or not its cgroup exists. Its error, from
// cgroup2.Load refusing the path, cannot happen for a Tree made by Open, which checks the path.
func (t *Tree) job(kind Kind, id uint64) (*Job, error) {
	rel := path.Join(subdir(kind), jobname.Format(kind, id))
	cg := path.Join(t.path, rel)
	m, err := cgroup2.Load(cg, cgroup2.WithMountpoint(t.mount))
	if err != nil {
		return nil, fmt.Errorf("cgroup: job %s: %w", cg, err)
	}
	return &Job{kind: kind, id: id, path: cg, dir: filepath.Join(t.dir, rel), m: m}, nil
}

// JobInfo describes a job cgroup found by Tree.Jobs.
type JobInfo struct {
	Job       *Job  // a handle on the cgroup, as NewJob returns
	Pids      []int // processes in it when it was listed
	Populated bool  // whether it was populated when listed
}

// Jobs lists the job cgroups in the tree, exclusive ones first, each side in increasing id order:
// what a restarted daemon adopts (or kills and removes). Entries whose names are not job names of
// the side they are in, such as cgroups made by someone else, are ignored, as are jobs removed
// while the list is made.
func (t *Tree) Jobs() ([]JobInfo, error) {
	var out []JobInfo
	for _, k := range [...]Kind{Exclusive, Shared} {
		sub := filepath.Join(t.dir, subdir(k))
		ents, err := os.ReadDir(sub)
		if err != nil {
			return nil, err
		}
		var side []JobInfo
		for _, e := range ents {
			kind, id, ok := jobname.Parse(e.Name())
			if !e.IsDir() || !ok || kind != k {
				continue
			}
			j, err := t.job(kind, id)
			if err != nil {
				return nil, err
			}
			pids, err := j.Pids()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			ev, err := readEvents(j.dir)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			side = append(side, JobInfo{Job: j, Pids: pids, Populated: ev.Populated})
		}
		slices.SortFunc(side, func(a, b JobInfo) int { return cmp.Compare(a.Job.id, b.Job.id) })
		out = append(out, side...)
	}
	return out, nil
}

// FreezeShared freezes the shared side, every shared job in it and any created later, and
// returns once the kernel reports it frozen ("frozen 1" in shared/cgroup.events): from then on no
// shared process runs until ThawShared. An empty shared side is frozen at once. If ctx ends first
// it returns ctx's error, wrapped, and leaves the freeze requested (the kernel completes it in the
// background); call ThawShared to undo it.
func (t *Tree) FreezeShared(ctx context.Context) error {
	return t.setShared(ctx, true)
}

// ThawShared undoes FreezeShared and returns once the kernel reports the shared side thawed
// ("frozen 0"). If something else keeps it frozen (a frozen ancestor of the tree), that never
// happens, and ThawShared returns ctx's error, wrapped, when ctx ends.
func (t *Tree) ThawShared(ctx context.Context) error {
	return t.setShared(ctx, false)
}

// setShared requests the state in shared/cgroup.freeze and waits for the kernel to report it in
// shared/cgroup.events. cgroup2.Manager.Freeze and Thaw are not used: they read cgroup.freeze
// back, which only echoes the request (the kernel freezes tasks asynchronously, and "frozen 1"
// appears in cgroup.events only once all of them are stopped), and they poll with sleeps.
func (t *Tree) setShared(ctx context.Context, frozen bool) error {
	dir := filepath.Join(t.dir, subdir(Shared))
	v := "0"
	if frozen {
		v = "1"
	}
	if err := writeFile(filepath.Join(dir, freezeFile), v); err != nil {
		return err
	}
	return waitEvents(ctx, dir, func(ev events) bool { return ev.Frozen == frozen })
}

// SharedFrozen reports whether the kernel reports the shared side frozen now, as FreezeShared
// waits for ("frozen 1" in cgroup.events). While a freeze is in progress it is false.
func (t *Tree) SharedFrozen() (bool, error) {
	ev, err := readEvents(filepath.Join(t.dir, subdir(Shared)))
	return ev.Frozen, err
}

// SharedDir returns the directory of the shared side, the cgroup that holds every shared job
// (its cpu.stat counts the CPU time of them all).
func (t *Tree) SharedDir() string { return filepath.Join(t.dir, subdir(Shared)) }

// RemoveTree removes the cgroup directory dir and every cgroup below it, bottom-up: it kills
// the processes of each (frozen ones too, through cgroup.kill) and waits for the kernel to report
// it empty before removing it. A directory that is not there is not an error. It is for tests and
// benchmarks that start daemons of their own and must leave no cgroup behind.
func RemoveTree(ctx context.Context, dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if e.IsDir() {
			errs = append(errs, RemoveTree(ctx, filepath.Join(dir, e.Name())))
		}
	}
	_ = writeFile(filepath.Join(dir, killFile), "1")
	err = waitEvents(ctx, dir, func(ev events) bool { return !ev.Populated })
	if err == nil {
		if err = unix.Rmdir(dir); err != nil {
			err = &fs.PathError{Op: "rmdir", Path: dir, Err: err}
		}
	}
	if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
