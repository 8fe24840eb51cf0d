package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/units"
)

// Adopted is a job a restarted daemon finds still running.
type Adopted struct {
	Ticket    uint64
	Shared    bool
	Placement Placement
	PIDs      []int
}

// adopter is a Driver that can find the jobs an earlier daemon placed:
// their names (x-N, s-N) carry mode and ticket.
type adopter interface {
	// Adopt lists the running jobs, removes empty leftovers, and reports
	// whether the shared jobs are frozen.
	Adopt(ctx context.Context) (jobs []Adopted, sharedFrozen bool, err error)
}

func (d *cgroupfsDriver) Adopt(ctx context.Context) ([]Adopted, bool, error) {
	infos, err := d.tree.Jobs()
	if err != nil {
		return nil, false, err
	}
	var out []Adopted
	for _, in := range infos {
		if !in.Populated {
			in.Job.Remove()
			continue
		}
		out = append(out, Adopted{Ticket: in.Job.ID(), Shared: in.Job.Kind() == cgroup.Shared, Placement: cgroupPlacement{in.Job}, PIDs: in.Pids})
	}
	frozen, err := d.tree.SharedFrozen()
	return out, frozen, err
}

func (d *systemdDriver) Adopt(ctx context.Context) ([]Adopted, bool, error) {
	names, err := d.conn.ListUnits(ctx, "perflock-*.scope")
	if err != nil {
		return nil, false, err
	}
	var out []Adopted
	for _, name := range names {
		job := strings.TrimSuffix(strings.TrimPrefix(name, "perflock-"), ".scope")
		kind, num, ok := strings.Cut(job, "-")
		t, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil || (kind != "x" && kind != "s") {
			continue // not one of ours
		}
		a := Adopted{Ticket: t, Shared: kind == "s", Placement: scopePlacement{d.conn, d.watch, name}}
		if cg, err := d.conn.ControlGroup(ctx, name); err == nil && cg != "" {
			if mount, err := cgroup.Mountpoint(); err == nil {
				a.PIDs, _ = cgroup.ReadPids(filepath.Join(mount, cg))
			}
		}
		out = append(out, a)
	}
	st, err := d.conn.FreezerState(ctx, SharedSlice)
	if err != nil {
		return nil, false, err
	}
	return out, st != units.FreezerRunning, nil
}

// procOwner reads a process's real uid and command line, for listing an
// adopted job.
func procOwner(pid int) (uid uint32, argv []string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/status", procRoot, pid))
	if err != nil {
		return 0, nil, err
	}
	st, err := parseStatus(b)
	if err != nil {
		return 0, nil, err
	}
	cmd, _ := os.ReadFile(fmt.Sprintf("%s/%d/cmdline", procRoot, pid))
	argv = strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
	return st.uid, argv, nil
}
