package units

import (
	"context"
	"fmt"
	"sync"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// resync is how often WaitInactive re-reads a unit's state by itself, in
// case systemd's signal was lost (go-systemd drops updates it cannot
// deliver). Signals, not this, are how it normally learns.
const resync = 30 * time.Second

// Watcher hands systemd's PropertiesChanged signals to WaitInactive calls.
// One Watcher per Conn; Close it before the Conn.
type Watcher struct {
	c       *Conn
	done    chan struct{}
	stopped chan struct{}
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

// Watch subscribes to systemd's unit signals. The goroutine it starts ends
// at Close.
func (c *Conn) Watch() (*Watcher, error) {
	if err := c.c.Subscribe(); err != nil {
		return nil, fmt.Errorf("units: subscribe: %w", err)
	}
	w := &Watcher{c: c, done: make(chan struct{}), stopped: make(chan struct{}), waiters: make(map[string]map[chan struct{}]struct{})}
	updates := make(chan *sddbus.PropertiesUpdate, 1024)
	errs := make(chan error, 16)
	c.c.SetPropertiesSubscriber(updates, errs)
	go func() {
		defer close(w.stopped)
		for {
			select {
			case u := <-updates:
				w.wake(u.UnitName)
			case <-errs:
				// A signal go-systemd could not read: waiters re-read at resync.
			case <-w.done:
				return
			}
		}
	}()
	return w, nil
}

// Close stops the watcher's goroutine.
func (w *Watcher) Close() {
	close(w.done)
	<-w.stopped
}

// WaitInactive returns nil once unit is inactive or failed (for a scope:
// every process in it has exited) or no longer loaded, learning of it from
// systemd's D-Bus signals; or ctx's error.
func (w *Watcher) WaitInactive(ctx context.Context, unit string) error {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.waiters[unit] == nil {
		w.waiters[unit] = make(map[chan struct{}]struct{})
	}
	w.waiters[unit][ch] = struct{}{}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.waiters[unit], ch)
		if len(w.waiters[unit]) == 0 {
			delete(w.waiters, unit)
		}
		w.mu.Unlock()
	}()
	t := time.NewTicker(resync)
	defer t.Stop()
	for {
		// Read the state after registering, so no change goes unseen.
		done, err := w.c.inactive(ctx, unit)
		if err != nil {
			return fmt.Errorf("units: watch %s: %w", unit, err)
		}
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("units: watch %s: %w", unit, ctx.Err())
		}
	}
}

func (w *Watcher) wake(unit string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.waiters[unit] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (c *Conn) inactive(ctx context.Context, unit string) (bool, error) {
	props, err := c.c.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		if dbusErrorName(err) == "org.freedesktop.systemd1.NoSuchUnit" {
			return true, nil
		}
		return false, err
	}
	load, _ := props["LoadState"].(string)
	active, _ := props["ActiveState"].(string)
	return load == "not-found" || active == "inactive" || active == "failed", nil
}
