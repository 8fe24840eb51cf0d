// Package units is perflock's systemd driver: it talks to systemd over D-Bus
// to run jobs in transient scopes and to freeze and thaw the slices that hold
// background work.
//
// Every call takes a context first; it bounds that call only. Errors name the
// unit they concern and wrap the underlying D-Bus error with %w, so callers
// can test them with errors.Is / errors.As (for example against a
// godbus.Error whose Name is "org.freedesktop.systemd1.NoSuchUnit").
//
// Freezing needs systemd 246 or later on the unified cgroup (v2) hierarchy.
package units

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// D-Bus error names systemd answers with that this package acts on.
const (
	errUnitExists = "org.freedesktop.systemd1.UnitExists"
)

// Freezer states as systemd reports them in a unit's FreezerState property.
// systemd 256 and later also report "freezing-by-parent" and
// "frozen-by-parent" for units below a frozen slice.
const (
	FreezerRunning        = "running"
	FreezerFreezing       = "freezing"
	FreezerFrozen         = "frozen"
	FreezerThawing        = "thawing"
	FreezerFrozenByParent = "frozen-by-parent"
)

// pollInterval is how often Freeze and Thaw re-read FreezerState while they
// wait for systemd to report the state they asked for.
const pollInterval = 20 * time.Millisecond

// Conn is a connection to the system's systemd manager. It is safe for
// concurrent use. Close it when done.
type Conn struct {
	c *sddbus.Conn
}

// Connect connects to systemd through the system bus and, if that fails and
// the caller is root, through systemd's private socket
// (/run/systemd/private), which works without a running dbus-daemon.
//
// ctx bounds the connection attempt only: the connection returned lives
// until Close, even after ctx is cancelled.
func Connect(ctx context.Context) (*Conn, error) {
	// go-systemd ties the connection's life to the context it dials with,
	// so dial with one that is never cancelled and honour ctx here instead.
	life := context.WithoutCancel(ctx)
	type result struct {
		c   *sddbus.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := sddbus.NewSystemConnectionContext(life)
		if err != nil && os.Geteuid() == 0 {
			var perr error
			c, perr = sddbus.NewSystemdConnectionContext(life)
			if perr != nil {
				err = fmt.Errorf("%w; private socket: %w", err, perr)
			} else {
				err = nil
			}
		}
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("units: connect to systemd: %w", r.err)
		}
		return &Conn{c: r.c}, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, fmt.Errorf("units: connect to systemd: %w", ctx.Err())
	}
}

// Close closes the connection. Units it started keep running.
func (c *Conn) Close() {
	c.c.Close()
}

// StartScope starts a transient scope unit called name (it must end in
// ".scope") in the given slice (empty means systemd's default), moves the
// processes pids into it, and waits for the start job to finish. Extra
// properties (CPUWeight, AllowedCPUs, …) go in props.
//
// It returns nil only when the job's result is "done". If a unit of that
// name still exists (a failed scope left over from an earlier run),
// StartScope resets it and tries once more. Scopes cannot be restarted: use a
// new name for every job.
func (c *Conn) StartScope(ctx context.Context, name, slice string, pids []uint32, props ...sddbus.Property) error {
	all := make([]sddbus.Property, 0, len(props)+3)
	all = append(all, sddbus.PropPids(pids...))
	if slice != "" {
		all = append(all, sddbus.PropSlice(slice))
	}
	all = append(all, sddbus.PropDescription("perflock job "+name))
	all = append(all, props...)

	err := c.startTransient(ctx, name, all)
	if dbusErrorName(err) == errUnitExists {
		if rerr := c.c.ResetFailedUnitContext(ctx, name); rerr != nil {
			return fmt.Errorf("units: start %s: %w (reset-failed: %w)", name, err, rerr)
		}
		err = c.startTransient(ctx, name, all)
	}
	if err != nil {
		return fmt.Errorf("units: start %s: %w", name, err)
	}
	return nil
}

func (c *Conn) startTransient(ctx context.Context, name string, props []sddbus.Property) error {
	// Buffered: go-systemd delivers the job result while holding a lock, so
	// an unread unbuffered channel would stall the whole connection.
	done := make(chan string, 1)
	if _, err := c.c.StartTransientUnitContext(ctx, name, "fail", props, done); err != nil {
		return err
	}
	return waitJob(ctx, done)
}

// Stop stops unit and waits for the stop job to finish. Since systemd 256 a
// frozen unit cannot be stopped: thaw it (or its slice) first.
func (c *Conn) Stop(ctx context.Context, unit string) error {
	done := make(chan string, 1)
	if _, err := c.c.StopUnitContext(ctx, unit, "replace", done); err != nil {
		return fmt.Errorf("units: stop %s: %w", unit, err)
	}
	if err := waitJob(ctx, done); err != nil {
		return fmt.Errorf("units: stop %s: %w", unit, err)
	}
	return nil
}

// dbusErrorName returns the D-Bus error name err wraps, or "".
func dbusErrorName(err error) string {
	var v godbus.Error
	if errors.As(err, &v) {
		return v.Name
	}
	var p *godbus.Error
	if errors.As(err, &p) && p != nil {
		return p.Name
	}
	return ""
}

// waitJob waits for a job's result and turns anything but "done" into an error.
func waitJob(ctx context.Context, done <-chan string) error {
	select {
	case res := <-done:
		if res != "done" {
			return fmt.Errorf("job result %q", res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for job: %w", ctx.Err())
	}
}

// FreezerState returns unit's FreezerState property: one of the Freezer*
// constants (systemd may add others).
func (c *Conn) FreezerState(ctx context.Context, unit string) (string, error) {
	p, err := c.c.GetUnitPropertyContext(ctx, unit, "FreezerState")
	if err != nil {
		return "", fmt.Errorf("units: FreezerState of %s: %w", unit, err)
	}
	s, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("units: FreezerState of %s: unexpected type %s", unit, p.Value.Signature())
	}
	return s, nil
}

// ControlGroup returns the cgroup path of unit (a slice, scope or service)
// relative to the cgroup root, e.g. "/perflock.slice/x.scope". It is empty
// for a unit that is not active.
func (c *Conn) ControlGroup(ctx context.Context, unit string) (string, error) {
	typ, err := unitType(unit)
	if err != nil {
		return "", fmt.Errorf("units: ControlGroup of %s: %w", unit, err)
	}
	p, err := c.c.GetUnitTypePropertyContext(ctx, unit, typ, "ControlGroup")
	if err != nil {
		return "", fmt.Errorf("units: ControlGroup of %s: %w", unit, err)
	}
	s, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("units: ControlGroup of %s: unexpected type %s", unit, p.Value.Signature())
	}
	return s, nil
}

// Freeze freezes unit (for a slice: everything below it) and returns once
// systemd reports its FreezerState as "frozen", or with an error when ctx
// ends first. The frozen processes stay where they are and keep their
// memory; they just get no CPU time until Thaw.
func (c *Conn) Freeze(ctx context.Context, unit string) error {
	if err := c.c.FreezeUnit(ctx, unit); err != nil {
		return fmt.Errorf("units: freeze %s: %w", unit, err)
	}
	if err := c.waitFreezer(ctx, unit, FreezerFrozen); err != nil {
		return fmt.Errorf("units: freeze %s: %w", unit, err)
	}
	return nil
}

// Thaw thaws unit and returns once systemd reports its FreezerState as
// "running", or with an error when ctx ends first.
func (c *Conn) Thaw(ctx context.Context, unit string) error {
	if err := c.c.ThawUnit(ctx, unit); err != nil {
		return fmt.Errorf("units: thaw %s: %w", unit, err)
	}
	if err := c.waitFreezer(ctx, unit, FreezerRunning); err != nil {
		return fmt.Errorf("units: thaw %s: %w", unit, err)
	}
	return nil
}

// waitFreezer polls unit's FreezerState until it equals want.
func (c *Conn) waitFreezer(ctx context.Context, unit, want string) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	last := ""
	for {
		st, err := c.FreezerState(ctx, unit)
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		last = st
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("FreezerState still %q, want %q: %w", last, want, ctx.Err())
		}
	}
}
