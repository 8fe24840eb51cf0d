package daemon

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/internal/jobname"
	"github.com/perflock/perflock/shield"
)

// cgroupfsDriver places jobs in perflock's own cgroup2 subtree (package
// cgroup): exclusive jobs under exclusive/x-N, shared ones under
// shared/s-N, frozen as a whole through shared's cgroup.freeze.
type cgroupfsDriver struct {
	tree  *cgroup.Tree
	claim io.Closer // this daemon's flock on the subtree
}

func openCgroupfs(name string) (Driver, error) {
	mount, err := cgroup.Mountpoint()
	if err != nil {
		return nil, fmt.Errorf("cgroupfs driver: %w", err)
	}
	t, err := cgroup.Open(mount, name)
	if err != nil {
		return nil, fmt.Errorf("cgroupfs driver: %w", err)
	}
	claim, err := claimDir(t.Dir())
	if err != nil {
		return nil, fmt.Errorf("cgroupfs driver: %w (the cgroup subtree %s: give this one another --cgroup-name)", err, t.Path())
	}
	return &cgroupfsDriver{tree: t, claim: claim}, nil
}

// ShieldBackend confines the other top-level cgroups, and the shared side,
// through cpuset.cpus.
func (d *cgroupfsDriver) ShieldBackend() shield.Backend {
	return shield.NewCgroupfs(d.tree.Mount(), strings.TrimPrefix(d.tree.Path(), "/"))
}

// Close lets go of the subtree; the jobs keep running.
func (d *cgroupfsDriver) Close() error { return d.claim.Close() }

func (d *cgroupfsDriver) Name() string    { return "cgroupfs" }
func (d *cgroupfsDriver) CanFreeze() bool { return true }

func (d *cgroupfsDriver) Place(ctx context.Context, job JobSpec, pid int) (Placement, error) {
	kind := cgroup.Exclusive
	if job.Shared {
		kind = cgroup.Shared
	}
	j, err := d.tree.NewJob(kind, job.Ticket)
	if err != nil {
		return nil, err
	}
	if err := j.Add(pid); err != nil {
		_ = j.Remove()
		return nil, err
	}
	return cgroupPlacement{j}, nil
}

func (d *cgroupfsDriver) SetSharedFrozen(ctx context.Context, frozen bool) error {
	if frozen {
		return d.tree.FreezeShared(ctx)
	}
	return d.tree.ThawShared(ctx)
}

func (d *cgroupfsDriver) Adopt(ctx context.Context) ([]Adopted, error) {
	infos, err := d.tree.Jobs()
	if err != nil {
		return nil, err
	}
	var out []Adopted
	for _, in := range infos {
		if !in.Populated {
			in.Job.Remove()
			continue
		}
		out = append(out, Adopted{Ticket: in.Job.ID(), Shared: in.Job.Kind() == cgroup.Shared, Placement: cgroupPlacement{in.Job}, PIDs: in.Pids})
	}
	return out, nil
}

// JobOf reads a job's ticket from a cgroup under the tree:
// TREE/exclusive/x-N or TREE/shared/s-N, or below them.
func (d *cgroupfsDriver) JobOf(cg string) (uint64, bool) {
	rest, ok := strings.CutPrefix(cg, d.tree.Path()+"/")
	if !ok {
		return 0, false
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 2 || (parts[0] != "exclusive" && parts[0] != "shared") {
		return 0, false
	}
	_, t, ok := jobname.Parse(parts[1])
	return t, ok
}

func (d *cgroupfsDriver) SharedCgroupDir(context.Context) (string, error) {
	return d.tree.SharedDir(), nil
}

// cgroupPlacement is a job's own cgroup.
type cgroupPlacement struct{ j *cgroup.Job }

func (p cgroupPlacement) Where() string                             { return p.j.Path() }
func (p cgroupPlacement) WaitEmpty(ctx context.Context) error       { return p.j.WaitEmpty(ctx) }
func (p cgroupPlacement) Remove() error                             { return p.j.Remove() }
func (p cgroupPlacement) Populated(context.Context) (bool, error)   { return p.j.Populated() }
func (p cgroupPlacement) CgroupDir(context.Context) (string, error) { return p.j.Dir(), nil }
func (p cgroupPlacement) EnforcesMaxRuntime() bool                  { return false }

// Stop sends SIGTERM to every process of the job, then kills the cgroup.
func (p cgroupPlacement) Stop(ctx context.Context, grace time.Duration) error {
	pids, err := p.j.Pids()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGTERM)
	}
	wctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	if p.j.WaitEmpty(wctx) == nil {
		return nil
	}
	if err := p.j.Kill(); err != nil {
		return err
	}
	return p.j.WaitEmpty(ctx)
}
