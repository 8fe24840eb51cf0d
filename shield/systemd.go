package shield

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/perflock/perflock/internal/cpuset"
)

// UnitConn is what the Systemd backend asks of systemd; *units.Conn has
// it.
type UnitConn interface {
	// Version is systemd's major version.
	Version(ctx context.Context) (int, error)
	// LoadState is the unit's LoadState: "loaded" for a unit systemd
	// knows, "not-found" for one it does not.
	LoadState(ctx context.Context, unit string) (string, error)
	// AllowedCPUs is the unit's AllowedCPUs=, empty where none is set.
	AllowedCPUs(ctx context.Context, unit string) (cpuset.Set, error)
	// EffectiveCPUs is the unit's EffectiveCPUs: the CPUs its tasks may
	// run on; empty where the cpuset controller is not enabled for it or
	// it is not active.
	EffectiveCPUs(ctx context.Context, unit string) (cpuset.Set, error)
	// SetAllowedCPUs sets the unit's AllowedCPUs= at runtime; the empty
	// set removes the setting.
	SetAllowedCPUs(ctx context.Context, unit string, cpus cpuset.Set) error
}

// systemUnits are the units directly below the root slice that hold the
// machine's work, besides perflock's own.
var systemUnits = []string{"init.scope", "system.slice", "user.slice", "machine.slice"}

// minSystemd is the first systemd with AllowedCPUs=.
const minSystemd = 244

// defaultSettle bounds how long a restore waits for a unit's
// EffectiveCPUs to widen; pollEvery is how often it looks.
const (
	defaultSettle = 10 * time.Second
	pollEvery     = 50 * time.Millisecond
)

// Systemd is the backend that confines other work through systemd's
// AllowedCPUs=, set at runtime (as `systemctl set-property --runtime`
// does) on init.scope, system.slice, user.slice, machine.slice and
// perflock's shared slice, of those systemd has loaded. It never touches
// perflock's exclusive slice or perflock.slice: the job keeps every CPU.
// An administrator's own AllowedCPUs= on these units is saved and put
// back like any other.
//
// Runtime settings live in drop-ins under /run/systemd/system.control and
// outlive the daemon; after Restore a unit that had no AllowedCPUs= keeps
// a drop-in that says "AllowedCPUs=" (none), which changes nothing. A
// daemon-reload during a run does not undo the shield (a persistent
// AllowedCPUs= of the administrator's in /etc/systemd/system.control
// does win over it at a reload).
//
// Restoring cannot trust the property alone: where another unit still
// sets AllowedCPUs=, systemd leaves the cpuset controller enabled at the
// root but does not write a unit's cpuset.cpus when its AllowedCPUs= is
// removed, so the unit's tasks stay on the housekeeping CPUs. So Restore
// reads every unit's EffectiveCPUs afterwards, and where they are
// narrower than before the shield, sets every possible CPU first (which
// systemd writes, and the kernel takes as the parent's CPUs, those that
// come online later included) and then the saved value again, and waits
// until they widen (ErrStillConfined if they do not). The unit's cgroup
// then keeps cpuset.cpus of every possible CPU where it had none: the same
// in effect.
//
// It needs systemd 244 or later on the unified cgroup (v2) hierarchy with
// the cpuset controller; Check says what is missing.
type Systemd struct {
	conn     UnitConn
	units    []string
	cgroup   string // the cgroup2 mount, for Check
	online   string // the online CPU list file, for Restore
	possible string // the possible CPU list file, for Restore
	settle   time.Duration

	lastReport
}

// SystemdState is what Systemd saves: each loaded unit's AllowedCPUs= and
// EffectiveCPUs before the shield.
type SystemdState struct {
	Units []UnitCPUs `json:"units"`
}

// UnitCPUs is one unit's CPUs. Allowed is its AllowedCPUs= (empty for
// none), Effective the CPUs its tasks could run on (empty: every CPU its
// parent's allow).
type UnitCPUs struct {
	Unit      string     `json:"unit"`
	Allowed   cpuset.Set `json:"allowed"`
	Effective cpuset.Set `json:"effective"`
}

// NewSystemd returns the Systemd backend talking to systemd through conn,
// confining, besides init.scope, system.slice, user.slice and
// machine.slice, perflock's shared slice sharedSlice (the systemd
// driver's, such as "perflock-shared.slice"; empty for none).
func NewSystemd(conn UnitConn, sharedSlice string) *Systemd {
	us := slices.Clone(systemUnits)
	if sharedSlice != "" {
		us = append(us, sharedSlice)
	}
	return &Systemd{conn: conn, units: us, cgroup: "/sys/fs/cgroup", online: DefaultOnline, possible: DefaultPossible, settle: defaultSettle}
}

// Name is "systemd".
func (s *Systemd) Name() string { return "systemd" }

// Check reports ErrUnsupported for systemd before 244, a host whose
// cgroup2 hierarchy is not at /sys/fs/cgroup (cgroup v1 or hybrid: systemd
// sets AllowedCPUs= only on the unified hierarchy), or one without the
// cpuset controller.
func (s *Systemd) Check(ctx context.Context) error {
	v, err := s.conn.Version(ctx)
	if err != nil {
		return fmt.Errorf("shield: systemd: %w", err)
	}
	if v < minSystemd {
		return errorf(ErrUnsupported, "shield: systemd: systemd %d has no AllowedCPUs= (it needs %d or later)", v, minSystemd)
	}
	if err := isCgroup2(s.cgroup); err != nil {
		return errorf(ErrUnsupported, "shield: systemd: AllowedCPUs= needs the unified cgroup hierarchy: %s is not cgroup2 (boot with systemd.unified_cgroup_hierarchy=1)", s.cgroup)
	}
	offered, err := readAttr(filepath.Join(s.cgroup, "cgroup.controllers"))
	if err != nil {
		return errorf(ErrUnsupported, "shield: systemd: %w", err)
	}
	if !slices.Contains(strings.Fields(offered), "cpuset") {
		return errorf(ErrUnsupported, "shield: systemd: the cgroup2 hierarchy at %s offers no cpuset controller", s.cgroup)
	}
	return nil
}

// Save reads AllowedCPUs= and EffectiveCPUs of each unit systemd has
// loaded; units it does not know (machine.slice without virtual machines
// or containers, often) are left out.
func (s *Systemd) Save(ctx context.Context) (json.RawMessage, error) {
	var st SystemdState
	for _, u := range s.units {
		ls, err := s.conn.LoadState(ctx, u)
		if err != nil {
			return nil, fmt.Errorf("shield: systemd: %w", err)
		}
		if ls != "loaded" {
			continue
		}
		allowed, err := s.conn.AllowedCPUs(ctx, u)
		if err != nil {
			return nil, fmt.Errorf("shield: systemd: %w", err)
		}
		eff, err := s.conn.EffectiveCPUs(ctx, u)
		if err != nil {
			return nil, fmt.Errorf("shield: systemd: %w", err)
		}
		st.Units = append(st.Units, UnitCPUs{Unit: u, Allowed: allowed, Effective: eff})
	}
	return json.Marshal(st)
}

// Confine sets AllowedCPUs= to the housekeeping CPUs on every saved unit.
// Report then names the units whose EffectiveCPUs did not follow.
func (s *Systemd) Confine(ctx context.Context, saved json.RawMessage, housekeeping cpuset.Set) error {
	st, err := s.decode(saved)
	if err != nil {
		return err
	}
	s.setReport("")
	for _, u := range st.Units {
		if err := s.conn.SetAllowedCPUs(ctx, u.Unit, housekeeping); err != nil {
			return fmt.Errorf("shield: systemd: %w", err)
		}
	}
	var names, wide []string
	for _, u := range st.Units {
		names = append(names, u.Unit)
		if eff, err := s.conn.EffectiveCPUs(ctx, u.Unit); err == nil && !eff.IsEmpty() && !eff.SubsetOf(housekeeping) {
			wide = append(wide, fmt.Sprintf("%s (EffectiveCPUs=%s)", u.Unit, eff))
		}
	}
	r := fmt.Sprintf("AllowedCPUs=%s on %s", housekeeping, strings.Join(names, ", "))
	if len(wide) > 0 {
		r += "; not confined: " + strings.Join(wide, ", ")
	}
	s.setReport(r)
	return nil
}

// Restore sets every saved unit's AllowedCPUs= back, then makes sure its
// tasks run on the CPUs they ran on before (see Systemd).
func (s *Systemd) Restore(ctx context.Context, saved json.RawMessage) error {
	st, err := s.decode(saved)
	if err != nil {
		return err
	}
	online, err := cpuset.ReadFile(s.online)
	if err != nil {
		return fmt.Errorf("shield: systemd: online CPUs: %w", err)
	}
	wide, err := cpuset.ReadFile(s.possible)
	if err != nil {
		wide = online
	}
	var errs []error
	for _, u := range st.Units {
		if err := s.conn.SetAllowedCPUs(ctx, u.Unit, u.Allowed); err != nil {
			errs = append(errs, fmt.Errorf("shield: systemd: %w", err))
		}
	}
	// Only once every unit is back: whether systemd keeps cpuset enabled
	// at the root depends on all of them.
	for _, u := range st.Units {
		want := u.Effective.Intersect(online)
		if u.Effective.IsEmpty() {
			want = online
		}
		ok, err := s.widened(ctx, u.Unit, want)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			continue
		}
		for _, cpus := range []cpuset.Set{wide, u.Allowed} {
			if err := s.conn.SetAllowedCPUs(ctx, u.Unit, cpus); err != nil {
				errs = append(errs, fmt.Errorf("shield: systemd: %w", err))
			}
		}
		if err := s.waitWidened(ctx, u.Unit, want); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// widened reports whether unit's tasks may run on every CPU of want: its
// EffectiveCPUs hold them, or are empty (no cpuset of its own).
func (s *Systemd) widened(ctx context.Context, unit string, want cpuset.Set) (bool, error) {
	eff, err := s.conn.EffectiveCPUs(ctx, unit)
	if err != nil {
		return false, fmt.Errorf("shield: systemd: %w", err)
	}
	return eff.IsEmpty() || want.SubsetOf(eff), nil
}

// waitWidened waits until widened, for s.settle at most.
func (s *Systemd) waitWidened(ctx context.Context, unit string, want cpuset.Set) error {
	deadline := time.Now().Add(s.settle)
	for {
		wide, err := s.widened(ctx, unit, want)
		if err != nil || wide {
			return err
		}
		if time.Now().After(deadline) {
			eff, _ := s.conn.EffectiveCPUs(ctx, unit)
			return fmt.Errorf("%w: %s: EffectiveCPUs=%s, want %s (`systemctl set-property --runtime %s AllowedCPUs=%s` widens it)",
				ErrStillConfined, unit, eff, want, unit, want)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("shield: systemd: waiting for %s to widen: %w", unit, ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}

// decode reads a saved SystemdState, believing only units this backend
// confines.
func (s *Systemd) decode(saved json.RawMessage) (SystemdState, error) {
	var st SystemdState
	if err := decode(s.Name(), saved, &st); err != nil {
		return st, err
	}
	for _, u := range st.Units {
		if !slices.Contains(s.units, u.Unit) {
			return st, fmt.Errorf("%w: systemd: unit %q is not one this shield confines (%s)", ErrState, u.Unit, strings.Join(s.units, ", "))
		}
	}
	return st, nil
}

// Report names the units the last Confine set, and those whose tasks did
// not follow.

var _ Reporter = (*Systemd)(nil)
