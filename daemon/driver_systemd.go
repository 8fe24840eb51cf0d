package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/internal/cmdline"
	"github.com/perflock/perflock/internal/cpuset"
	"github.com/perflock/perflock/internal/jobname"
	"github.com/perflock/perflock/shield"
	"github.com/perflock/perflock/units"
)

// The slices perflock's scopes live in. perflock-exclusive.slice and
// perflock-shared.slice are children of perflock.slice (a dash is a level).
const (
	ExclusiveSlice = "perflock-exclusive.slice"
	SharedSlice    = "perflock-shared.slice"
)

// Throttle limits the shared (pls) jobs beyond their idle CPU weight.
// Zero values mean no limit.
type Throttle struct {
	// CPUQuota is the share of one CPU per second, e.g. 1.5 for 150 %.
	CPUQuota float64
	// CPUs the shared jobs may use, as a cpuset list ("0-3,8").
	CPUs string
	// MemoryHigh in bytes.
	MemoryHigh uint64
}

// systemdDriver runs every job in a transient scope: exclusive ones in
// perflock-exclusive.slice with every online CPU and the top CPU weight,
// shared ones in perflock-shared.slice with the idle weight, frozen as a
// whole with FreezeUnit.
type systemdDriver struct {
	conn    *units.Conn
	watch   *units.Watcher
	version int
	allCPUs []byte // AllowedCPUs mask of every online CPU
	shared  []sddbus.Property
	claim   io.Closer // this daemon's claim on the perflock units
}

// ErrNoSystemd: systemd is not the service manager here.
var ErrNoSystemd = errors.New("daemon: systemd is not running as the service manager")

// systemdBooted is sd_booted(3): /run/systemd/system exists.
func systemdBooted() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

func openSystemd(ctx context.Context, th Throttle) (Driver, error) {
	if !systemdBooted() {
		return nil, ErrNoSystemd
	}
	claim, err := claimName("perflockd-systemd-driver")
	if err != nil {
		return nil, fmt.Errorf("systemd driver: %w (the units perflock-*.scope and perflock*.slice)", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := units.Connect(cctx)
	if err != nil {
		claim.Close()
		return nil, fmt.Errorf("systemd driver: %w", err)
	}
	d := &systemdDriver{conn: conn, claim: claim}
	if d.version, err = conn.Version(cctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("systemd driver: %w", err)
	}
	online, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("systemd driver: online CPUs: %w", err)
	}
	if d.allCPUs, err = cpuMask(strings.TrimSpace(string(online))); err != nil {
		d.Close()
		return nil, fmt.Errorf("systemd driver: online CPUs: %w", err)
	}
	if d.shared, err = d.sharedProps(th); err != nil {
		d.Close()
		return nil, err
	}
	if d.watch, err = conn.Watch(); err != nil {
		d.Close()
		return nil, fmt.Errorf("systemd driver: %w", err)
	}
	// Both slices stay active, so the shared one can be frozen even while it
	// is empty, and scopes started under a frozen slice start frozen.
	for _, s := range []string{ExclusiveSlice, SharedSlice} {
		if err := conn.EnsureSlice(cctx, s); err != nil {
			d.Close()
			return nil, fmt.Errorf("systemd driver: %w", err)
		}
	}
	return d, nil
}

func (d *systemdDriver) sharedProps(th Throttle) ([]sddbus.Property, error) {
	weight := uint64(0) // "idle", systemd >= 252
	if d.version < 252 {
		weight = 1
	}
	props := []sddbus.Property{prop("CPUWeight", weight)}
	if th.CPUQuota > 0 {
		props = append(props, prop("CPUQuotaPerSecUSec", uint64(th.CPUQuota*1e6)))
	}
	if th.CPUs != "" {
		mask, err := cpuMask(th.CPUs)
		if err != nil {
			return nil, fmt.Errorf("%w: shared CPUs %q: %v", ErrConfig, th.CPUs, err)
		}
		props = append(props, prop("AllowedCPUs", mask))
	}
	if th.MemoryHigh > 0 {
		props = append(props, prop("MemoryHigh", th.MemoryHigh))
	}
	return props, nil
}

func prop(name string, v any) sddbus.Property {
	return sddbus.Property{Name: name, Value: godbus.MakeVariant(v)}
}

func (d *systemdDriver) Name() string { return "systemd" }

// CanFreeze: FreezeUnit exists since systemd 246.
func (d *systemdDriver) CanFreeze() bool { return d.version >= 246 }

func (d *systemdDriver) Place(ctx context.Context, job JobSpec, pid int) (Placement, error) {
	name := jobname.Scope(job.Name)
	slice := ExclusiveSlice
	props := []sddbus.Property{
		prop("Description", fmt.Sprintf("perflock %s job of %s: %s", map[bool]string{true: "shared", false: "exclusive"}[job.Shared], job.User, cmdline.Short(job.Command, 200))),
		prop("CollectMode", "inactive-or-failed"),
	}
	if job.Shared {
		slice = SharedSlice
		props = append(props, d.shared...)
	} else {
		props = append(props, prop("CPUWeight", uint64(10000)), prop("AllowedCPUs", d.allCPUs))
	}
	if job.MaxRuntime > 0 {
		props = append(props, prop("RuntimeMaxUSec", uint64(job.MaxRuntime/time.Microsecond)))
	}
	if err := d.conn.StartScope(ctx, name, slice, []uint32{uint32(pid)}, props...); err != nil {
		return nil, err
	}
	return scopePlacement{d.conn, d.watch, name}, nil
}

// ShieldBackend confines init.scope, system.slice, user.slice,
// machine.slice and the shared slice with runtime AllowedCPUs=.
func (d *systemdDriver) ShieldBackend() shield.Backend { return shield.NewSystemd(d.conn, SharedSlice) }

// Close ends the driver's D-Bus connection; scopes keep running.
func (d *systemdDriver) Close() error {
	if d.watch != nil {
		d.watch.Close()
	}
	d.conn.Close()
	d.claim.Close()
	return nil
}

func (d *systemdDriver) SharedCgroupDir(ctx context.Context) (string, error) {
	if !d.CanFreeze() {
		return "", fmt.Errorf("systemd %d cannot freeze (246 or later can)", d.version)
	}
	return unitCgroupDir(ctx, d.conn.ControlGroup, SharedSlice)
}

// JobOf reads a job's ticket from a cgroup in one of its scopes:
// /perflock.slice/perflock-exclusive.slice/perflock-x-N.scope, or below.
func (d *systemdDriver) JobOf(cg string) (uint64, bool) {
	parts := strings.Split(cg, "/")
	if len(parts) < 4 || parts[1] != "perflock.slice" {
		return 0, false
	}
	_, t, ok := jobname.ParseScope(parts[3])
	return t, ok
}

// Adopt finds the scopes perflock-x-N.scope and perflock-s-N.scope.
func (d *systemdDriver) Adopt(ctx context.Context) ([]Adopted, error) {
	names, err := d.conn.ListUnits(ctx, "perflock-*.scope")
	if err != nil {
		return nil, err
	}
	var out []Adopted
	for _, name := range names {
		kind, t, ok := jobname.ParseScope(name)
		if !ok {
			continue // not one of ours
		}
		a := Adopted{Ticket: t, Shared: kind == jobname.Shared, Placement: scopePlacement{d.conn, d.watch, name}}
		if dir, err := unitCgroupDir(ctx, d.conn.ControlGroup, name); err == nil {
			a.PIDs, _ = cgroup.ReadPids(dir)
		}
		out = append(out, a)
	}
	return out, nil
}

// errNoUnitCgroup: a unit has no cgroup (it is not active).
var errNoUnitCgroup = errors.New("has no cgroup (not active)")

// unitCgroupDir is the directory of unit's cgroup under the cgroup2 mount.
func unitCgroupDir(ctx context.Context, controlGroup func(context.Context, string) (string, error), unit string) (string, error) {
	cg, err := controlGroup(ctx, unit)
	if err != nil {
		return "", err
	}
	if cg == "" {
		return "", fmt.Errorf("%s: %w", unit, errNoUnitCgroup)
	}
	mount, err := cgroup.Mountpoint()
	if err != nil {
		return "", err
	}
	return filepath.Join(mount, cg), nil
}

func (d *systemdDriver) SetSharedFrozen(ctx context.Context, frozen bool) error {
	if frozen {
		return d.conn.Freeze(ctx, SharedSlice)
	}
	return d.conn.Thaw(ctx, SharedSlice)
}

type scopePlacement struct {
	conn  *units.Conn
	watch *units.Watcher
	name  string
}

func (p scopePlacement) Where() string { return p.name }

func (p scopePlacement) WaitEmpty(ctx context.Context) error {
	return p.watch.WaitInactive(ctx, p.name)
}

// Populated reads the scope's cgroup.events: systemd marks the scope
// inactive only after its own, later, notification. A scope without a
// cgroup any more has no process.
func (p scopePlacement) Populated(ctx context.Context) (bool, error) {
	dir, err := unitCgroupDir(ctx, p.conn.ControlGroup, p.name)
	if errors.Is(err, errNoUnitCgroup) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	return cgroup.Populated(dir)
}

// Remove: systemd collects the scope itself (CollectMode).
func (p scopePlacement) Remove() error { return nil }

// EnforcesMaxRuntime: the scope's RuntimeMaxUSec stops the job.
func (p scopePlacement) EnforcesMaxRuntime() bool { return true }

// CgroupDir is, for an exclusive or group job, the cgroup of
// perflock-exclusive.slice rather than the scope's: systemd removes a
// scope's cgroup as soon as its last process exits, before the client
// sends done, while the slice stays and keeps the figures of the children
// it had. During an exclusive run the slice holds the job alone (a group
// job's figures are its group's).
func (p scopePlacement) CgroupDir(ctx context.Context) (string, error) {
	unit := p.name
	if k, _, ok := jobname.ParseScope(p.name); ok && k == jobname.Exclusive {
		unit = ExclusiveSlice
	}
	return unitCgroupDir(ctx, p.conn.ControlGroup, unit)
}

// Stop stops the scope: systemd sends SIGTERM, then SIGKILL. A frozen scope
// cannot be stopped on systemd >= 256, and stopping one on older versions
// thaws it first, so the shared slice is thawed before.
func (p scopePlacement) Stop(ctx context.Context, grace time.Duration) error {
	if st, err := p.conn.FreezerState(ctx, p.name); err == nil && st != units.FreezerRunning {
		if err := p.conn.Thaw(ctx, p.name); err != nil {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, grace+5*time.Second)
	defer cancel()
	return p.conn.Stop(sctx, p.name)
}

// cpuMask turns a CPU list ("0-3,8") into systemd's AllowedCPUs bytes
// (package cpuset); an empty list is an error.
func cpuMask(list string) ([]byte, error) {
	set, err := cpuset.Parse(list)
	if err != nil {
		return nil, err
	}
	if set.IsEmpty() {
		return nil, fmt.Errorf("no CPU in %q", list)
	}
	return set.Mask(), nil
}
