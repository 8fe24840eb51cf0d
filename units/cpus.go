package units

import (
	"context"
	"fmt"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/perflock/perflock/internal/cpuset"
)

// LoadState returns unit's LoadState property: "loaded" for a unit systemd
// has a definition for (a unit file or a transient unit), else
// "not-found", "bad-setting", "error" or "masked". systemd answers for any
// valid unit name, so a unit that does not exist is "not-found", not an
// error.
func (c *Conn) LoadState(ctx context.Context, unit string) (string, error) {
	p, err := c.c.GetUnitPropertyContext(ctx, unit, "LoadState")
	if err != nil {
		return "", fmt.Errorf("units: LoadState of %s: %w", unit, err)
	}
	s, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("units: LoadState of %s: unexpected type %s", unit, p.Value.Signature())
	}
	return s, nil
}

// AllowedCPUs returns the AllowedCPUs= setting of unit (a slice, scope or
// service): the empty set where none is set. It needs systemd 244 or later.
func (c *Conn) AllowedCPUs(ctx context.Context, unit string) (cpuset.Set, error) {
	return c.cpus(ctx, unit, "AllowedCPUs")
}

// EffectiveCPUs returns the CPUs the tasks of unit may run on, as systemd
// reads them from its cgroup's cpuset.cpus.effective: the empty set where
// the cpuset controller is not enabled for the unit (its tasks then run on
// every CPU their parent's allow) or the unit is not active.
func (c *Conn) EffectiveCPUs(ctx context.Context, unit string) (cpuset.Set, error) {
	return c.cpus(ctx, unit, "EffectiveCPUs")
}

func (c *Conn) cpus(ctx context.Context, unit, name string) (cpuset.Set, error) {
	typ, err := unitType(unit)
	if err != nil {
		return cpuset.Set{}, fmt.Errorf("units: %s of %s: %w", name, unit, err)
	}
	p, err := c.c.GetUnitTypePropertyContext(ctx, unit, typ, name)
	if err != nil {
		return cpuset.Set{}, fmt.Errorf("units: %s of %s: %w", name, unit, err)
	}
	b, ok := p.Value.Value().([]byte)
	if !ok {
		return cpuset.Set{}, fmt.Errorf("units: %s of %s: unexpected type %s", name, unit, p.Value.Signature())
	}
	return cpuset.FromMask(b), nil
}

// SetAllowedCPUs sets unit's AllowedCPUs= at runtime, as `systemctl
// set-property --runtime UNIT AllowedCPUs=…` does: systemd applies it at
// once and keeps it in a drop-in under /run until the next boot (it
// outlives this process). The empty set removes the setting, but see the
// package shield for when that leaves the unit's tasks where they were.
// It needs systemd 244 or later on the unified cgroup hierarchy.
func (c *Conn) SetAllowedCPUs(ctx context.Context, unit string, cpus cpuset.Set) error {
	mask := cpus.Mask()
	if mask == nil {
		mask = []byte{} // "ay", never a nil variant
	}
	p := sddbus.Property{Name: "AllowedCPUs", Value: godbus.MakeVariant(mask)}
	if err := c.c.SetUnitPropertiesContext(ctx, unit, true, p); err != nil {
		return fmt.Errorf("units: set AllowedCPUs=%s on %s: %w", cpus, unit, err)
	}
	return nil
}

// unitType is the D-Bus interface suffix of a unit's type-specific
// properties: "Slice" for "system.slice".
func unitType(unit string) (string, error) {
	i := strings.LastIndexByte(unit, '.')
	if i < 0 || i == len(unit)-1 {
		return "", fmt.Errorf("no unit type suffix")
	}
	return strings.ToUpper(unit[i+1:i+2]) + unit[i+2:], nil
}
