package shield

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/internal/cpuset"
)

// DefaultTree is the name of perflock's tree in the cgroup2 hierarchy, as
// the cgroupfs driver makes it.
const DefaultTree = "perflock"

// sharedChild is the child of perflock's tree that holds shared jobs (see
// package cgroup).
const sharedChild = "shared"

// Cgroupfs is the backend that confines other work through cpuset.cpus in
// a cgroup2 hierarchy, for hosts where perflock runs jobs with its
// cgroupfs driver (no systemd). It confines every top-level cgroup other
// than perflock's tree, and the tree's shared child; where the tree lies
// deeper ("a/perflock"), the siblings of each of its ancestors instead, so
// that the tree itself keeps every CPU. Where a cgroup on the way does not
// yet enable the cpuset controller for its children, Confine enables it,
// and Restore disables it again.
//
// It needs a cgroup2 hierarchy that offers the cpuset controller: not a
// hybrid host whose cpuset controller is bound to cgroup v1 (Check says
// so). Processes in the root cgroup itself cannot be confined by cpuset
// at all, nor those in an ancestor of perflock's tree: on a host where
// nothing moves processes out of the root cgroup, that is most of them, and
// Report counts them. A top-level cgroup made after Raise is not confined.
type Cgroupfs struct {
	mount, tree string
	proc        string // procfs, for Report
	possible    string // the possible CPU list file, for Restore

	// write writes a file, isCgroup2 checks a mount; tests replace them.
	write     func(path, value string) error
	isCgroup2 func(path string) error

	lastReport
}

// CgroupfsState is what Cgroupfs saves: the cpuset.cpus of each cgroup it
// will confine, and the cgroups whose subtree_control it will enable the
// cpuset controller in. Paths are relative to the mount, "." for the root.
type CgroupfsState struct {
	Enable  []string     `json:"enable_cpuset,omitempty"`
	Cgroups []CgroupCPUs `json:"cgroups"`
}

// CgroupCPUs is one cgroup's cpuset.cpus: empty for none of its own (it
// takes its parent's).
type CgroupCPUs struct {
	Path string     `json:"path"`
	CPUs cpuset.Set `json:"cpus"`
}

// NewCgroupfs returns the Cgroupfs backend for the cgroup2 hierarchy
// mounted at mount (found by cgroup.Mountpoint when empty) and perflock's
// tree of that name in it (DefaultTree when empty; a clean relative path).
func NewCgroupfs(mount, tree string) *Cgroupfs {
	if tree == "" {
		tree = DefaultTree
	}
	return &Cgroupfs{mount: mount, tree: tree, proc: "/proc", possible: DefaultPossible, write: writeAttr, isCgroup2: isCgroup2}
}

// Name is "cgroupfs".
func (c *Cgroupfs) Name() string { return "cgroupfs" }

func isCgroup2(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return errorf(ErrUnsupported, "shield: cgroupfs: %s: %w", dir, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return errorf(ErrUnsupported, "shield: cgroupfs: %s is not a cgroup2 hierarchy", dir)
	}
	return nil
}

func (c *Cgroupfs) mountpoint() (string, error) {
	if c.mount != "" {
		return c.mount, nil
	}
	m, err := cgroup.Mountpoint()
	if err != nil {
		return "", errorf(ErrUnsupported, "shield: cgroupfs: %w", err)
	}
	return m, nil
}

// treeParts splits the tree's name into its levels.
func (c *Cgroupfs) treeParts() ([]string, error) {
	if c.tree == "." || !filepath.IsLocal(c.tree) || filepath.Clean(c.tree) != c.tree {
		return nil, fmt.Errorf("shield: cgroupfs: tree %q: %w", c.tree, cgroup.ErrInvalidName)
	}
	return strings.Split(filepath.ToSlash(c.tree), "/"), nil
}

// Check reports ErrUnsupported where the mount is not cgroup2, its root
// does not offer the cpuset controller, or its root's subtree_control may
// not be written.
func (c *Cgroupfs) Check(ctx context.Context) error {
	mount, err := c.mountpoint()
	if err != nil {
		return err
	}
	if _, err := c.treeParts(); err != nil {
		return err
	}
	if err := c.isCgroup2(mount); err != nil {
		return err
	}
	offered, err := readAttr(filepath.Join(mount, "cgroup.controllers"))
	if err != nil {
		return errorf(ErrUnsupported, "shield: cgroupfs: %w", err)
	}
	if !slices.Contains(strings.Fields(offered), "cpuset") {
		return errorf(ErrUnsupported, "shield: cgroupfs: the cgroup2 hierarchy at %s offers no cpuset controller (a hybrid cgroup setup, with cpuset on cgroup v1?)", mount)
	}
	if p := filepath.Join(mount, "cgroup.subtree_control"); !writable(p) {
		return errorf(ErrUnsupported, "shield: cgroupfs: %s may not be written (perflockd not root?)", p)
	}
	return nil
}

// levels are the cgroups whose children Cgroupfs confines, relative to the
// mount: the root, then each ancestor of the tree; skip[i] is the child of
// levels[i] on the way to the tree, which is not confined.
func levels(parts []string) (levels, skip []string) {
	for i := range parts {
		levels = append(levels, path.Join(append([]string{"."}, parts[:i]...)...))
		skip = append(skip, parts[i])
	}
	return levels, skip
}

// Save lists the cgroups Confine will confine, with their cpuset.cpus, and
// the cgroups that do not yet enable cpuset for their children.
func (c *Cgroupfs) Save(ctx context.Context) (json.RawMessage, error) {
	if err := c.Check(ctx); err != nil {
		return nil, err
	}
	mount, _ := c.mountpoint()
	parts, _ := c.treeParts()
	var st CgroupfsState
	parents, skip := levels(parts)
	tree := path.Join(parts...)
	var targets []string
	for i, dir := range parents {
		es, err := os.ReadDir(filepath.Join(mount, dir))
		if isGone(err) {
			break // the tree is not made yet: its ancestors' children are all
		}
		if err != nil {
			return nil, fmt.Errorf("shield: cgroupfs: %w", err)
		}
		for _, e := range es {
			if e.IsDir() && e.Name() != skip[i] {
				targets = append(targets, path.Join(dir, e.Name()))
			}
		}
	}
	if fi, err := os.Stat(filepath.Join(mount, tree, sharedChild)); err == nil && fi.IsDir() {
		targets = append(targets, path.Join(tree, sharedChild))
	}
	// Each cgroup whose children are confined must enable cpuset for them.
	for _, dir := range append(parents, tree) {
		words, err := readAttr(filepath.Join(mount, dir, "cgroup.subtree_control"))
		if isGone(err) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("shield: cgroupfs: %w", err)
		}
		if !slices.Contains(strings.Fields(words), "cpuset") {
			st.Enable = append(st.Enable, dir)
		}
	}
	for _, t := range targets {
		p := filepath.Join(mount, t, "cpuset.cpus")
		s, err := readAttr(p)
		if isGone(err) {
			s = "" // cpuset not enabled for it yet: none of its own
		} else if err != nil {
			return nil, fmt.Errorf("shield: cgroupfs: %w", err)
		}
		cpus, err := cpuset.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("shield: cgroupfs: %s: %w", p, err)
		}
		st.Cgroups = append(st.Cgroups, CgroupCPUs{Path: t, CPUs: cpus})
	}
	return json.Marshal(st)
}

// Confine enables cpuset where Save found it missing, then writes the
// housekeeping CPUs to each saved cgroup's cpuset.cpus. A cgroup removed
// since Save is skipped.
func (c *Cgroupfs) Confine(ctx context.Context, saved json.RawMessage, housekeeping cpuset.Set) error {
	st, err := c.decode(saved)
	if err != nil {
		return err
	}
	mount, err := c.mountpoint()
	if err != nil {
		return err
	}
	c.setReport("")
	for _, dir := range st.Enable {
		p := filepath.Join(mount, dir, "cgroup.subtree_control")
		if err := c.write(p, "+cpuset"); err != nil {
			return fmt.Errorf("shield: cgroupfs: enable cpuset in %s: %w", p, err)
		}
	}
	n := 0
	for _, cg := range st.Cgroups {
		p := filepath.Join(mount, cg.Path, "cpuset.cpus")
		if err := c.write(p, housekeeping.String()); err != nil {
			if isGone(err) {
				continue
			}
			return fmt.Errorf("shield: cgroupfs: write %s to %s: %w", housekeeping, p, err)
		}
		n++
	}
	r := fmt.Sprintf("%d cgroups confined to CPUs %s", n, housekeeping)
	if k := c.rootProcesses(mount); k > 0 {
		r += fmt.Sprintf("; %d processes in the root cgroup keep every CPU (cpuset cannot confine the root cgroup)", k)
	}
	c.setReport(r)
	return nil
}

// rootProcesses counts the processes in the root cgroup, kernel threads
// (no command line) left out; 0 when it cannot tell.
func (c *Cgroupfs) rootProcesses(mount string) int {
	pids, err := cgroup.ReadPids(mount)
	if err != nil {
		return 0
	}
	n := 0
	for _, pid := range pids {
		if b, err := os.ReadFile(filepath.Join(c.proc, strconv.Itoa(pid), "cmdline")); err == nil && len(b) > 0 {
			n++
		}
	}
	return n
}

// Restore writes back each saved cgroup's cpuset.cpus, then disables
// cpuset where Confine enabled it, deepest first; a cgroup below that
// enabled cpuset itself in the meantime keeps it enabled (EBUSY), which
// confines nothing. Cgroups removed since are skipped.
//
// A cgroup that had no CPUs of its own gets none back only if it holds no
// processes: Linux refuses to empty the cpuset.cpus of a populated cgroup
// (ENOSPC). It then gets every possible CPU, which is the same in effect
// (its parent's CPUs, CPUs that come online later included) though the
// file shows them; disabling the controller, where Confine enabled it,
// removes the file.
func (c *Cgroupfs) Restore(ctx context.Context, saved json.RawMessage) error {
	st, err := c.decode(saved)
	if err != nil {
		return err
	}
	mount, err := c.mountpoint()
	if err != nil {
		return err
	}
	var errs []error
	for _, cg := range st.Cgroups {
		p := filepath.Join(mount, cg.Path, "cpuset.cpus")
		err := c.write(p, cg.CPUs.String()+"\n")
		if err != nil && cg.CPUs.IsEmpty() && errors.Is(err, unix.ENOSPC) {
			var possible cpuset.Set
			if possible, err = cpuset.ReadFile(c.possible); err == nil {
				if err = c.write(p, possible.String()); err != nil {
					err = fmt.Errorf("write %s (every possible CPU, since it may not be emptied) to %s: %w", possible, p, err)
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("shield: cgroupfs: %w", err))
			}
			continue
		}
		if err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("shield: cgroupfs: write %q to %s: %w", cg.CPUs.String(), p, err))
		}
	}
	for _, dir := range slices.Backward(st.Enable) {
		p := filepath.Join(mount, dir, "cgroup.subtree_control")
		if err := c.write(p, "-cpuset"); err != nil && !isGone(err) && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("shield: cgroupfs: disable cpuset in %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// decode reads a saved CgroupfsState and believes it only if it names
// cgroups Save could have listed: children of the root or of the tree's
// ancestors, other than the way to the tree, and the tree's shared child.
func (c *Cgroupfs) decode(saved json.RawMessage) (CgroupfsState, error) {
	var st CgroupfsState
	if err := decode(c.Name(), saved, &st); err != nil {
		return st, err
	}
	parts, err := c.treeParts()
	if err != nil {
		return st, err
	}
	parents, skip := levels(parts)
	tree := path.Join(parts...)
	for _, cg := range st.Cgroups {
		p := cg.Path
		i := slices.Index(parents, path.Dir(p))
		ok := p == path.Join(tree, sharedChild) ||
			(path.Clean(p) == p && i >= 0 && path.Base(p) != skip[i] && path.Base(p) != ".." && path.Base(p) != ".")
		if !ok {
			return st, fmt.Errorf("%w: cgroupfs: cgroup %q is not one Save lists for tree %q", ErrState, p, c.tree)
		}
	}
	for _, dir := range st.Enable {
		if dir != tree && !slices.Contains(parents, dir) {
			return st, fmt.Errorf("%w: cgroupfs: %q is not an ancestor of tree %q", ErrState, dir, c.tree)
		}
	}
	return st, nil
}

var _ Reporter = (*Cgroupfs)(nil)
