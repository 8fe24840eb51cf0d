package units

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Version returns systemd's major version, e.g. 252.
func (c *Conn) Version(ctx context.Context) (int, error) {
	v, err := c.c.GetManagerProperty("Version")
	if err != nil {
		return 0, fmt.Errorf("units: systemd version: %w", err)
	}
	return parseVersion(v)
}

// parseVersion reads the major number from the Version property as
// go-systemd renders it: `"252.22-1~deb12u1"`, quotes included.
func parseVersion(v string) (int, error) {
	s := strings.Trim(v, `"`)
	end := 0
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, err := strconv.Atoi(s[:end])
	if err != nil {
		return 0, fmt.Errorf("units: systemd version %q: %w", v, err)
	}
	return n, nil
}

// EnsureSlice makes slice active: it starts the installed unit of that name
// or, where none is installed, a transient slice. An active slice has a
// cgroup, so it can be frozen while empty.
func (c *Conn) EnsureSlice(ctx context.Context, slice string) error {
	state, err := c.c.GetUnitPropertyContext(ctx, slice, "ActiveState")
	if err == nil && state.Value.Value() == "active" {
		return nil
	}
	done := make(chan string, 1)
	if _, err := c.c.StartUnitContext(ctx, slice, "replace", done); err == nil {
		if err := waitJob(ctx, done); err != nil {
			return fmt.Errorf("units: start %s: %w", slice, err)
		}
		return nil
	}
	if err := c.startTransient(ctx, slice, nil); err != nil {
		return fmt.Errorf("units: start transient %s: %w", slice, err)
	}
	return nil
}

// ListUnits returns the names of active or activating units matching a glob
// pattern (e.g. "perflock-*.scope").
func (c *Conn) ListUnits(ctx context.Context, pattern string) ([]string, error) {
	us, err := c.c.ListUnitsByPatternsContext(ctx, []string{"active", "activating", "reloading"}, []string{pattern})
	if err != nil {
		return nil, fmt.Errorf("units: list %s: %w", pattern, err)
	}
	names := make([]string, 0, len(us))
	for _, u := range us {
		names = append(names, u.Name)
	}
	return names, nil
}
