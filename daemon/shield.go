package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/internal/cpuset"
	"github.com/perflock/perflock/shield"
)

// The shield (perflockd --shield CPUS) confines everything but the
// exclusive jobs to the housekeeping CPUs while one runs: the driver's
// units or cgroups (Driver.ShieldBackend), and, where the kernel lets it,
// the interrupts and the unbound workqueues. Its state file, shield.json
// beside the socket, is written before anything changes, so that a
// restarted daemon keeps the shield for the jobs it adopts, or lowers it.
const shieldFile = "shield.json"

// newShield is the daemon's shield, with every backend it may need: the
// backends a state file left by an earlier daemon names must be there to
// restore it, whether or not this daemon raises a shield.
func newShield(runDir string, drv Driver) *shield.Shield {
	var bs []shield.Backend
	if b := drv.ShieldBackend(); b != nil {
		bs = append(bs, b)
	}
	bs = append(bs, optional{shield.NewIRQ("")}, optional{shield.NewWorkqueue("")})
	return shield.New(filepath.Join(runDir, shieldFile), bs...)
}

// checkShield checks --shield at start: the CPU list, and whether the
// driver can confine anything. A shield that cannot work is said at once,
// in the log and in each run report; the daemon serves without it.
func (s *server) checkShield(ctx context.Context) {
	if s.cfg.Shield == "" {
		return
	}
	why := ""
	hk, err := cpuset.Parse(s.cfg.Shield)
	switch {
	case err != nil:
		why = fmt.Sprintf("--shield %q: %v", s.cfg.Shield, err)
	case s.drv.ShieldBackend() == nil:
		why = fmt.Sprintf("the %s driver has no units or cgroups to confine", s.drv.Name())
	default:
		if err := s.shield.Check(ctx, hk); err != nil {
			why = err.Error()
		}
	}
	if why != "" {
		s.shieldWhy = why
		s.log.Warn("--shield: no shield on this machine; exclusive jobs run unshielded", "why", why)
		return
	}
	s.hk = hk
	s.log.Info("shield ready: while an exclusive or group job runs, other work keeps to the housekeeping CPUs", "cpus", hk.String())
}

// setShield raises or lowers the shield off the loop.
func (s *server) setShield(on bool) {
	hk := s.hk
	s.goFn(func() {
		ctx, cancel := context.WithTimeout(s.ctx, driverTimeout)
		var err error
		if on {
			err = s.shield.Raise(ctx, hk)
		} else {
			err = s.shield.Lower(ctx)
		}
		cancel()
		report := s.shield.Report()
		s.post(func() {
			for _, r := range report {
				s.log.Info("shield", "note", r)
			}
			s.step(core.ShieldDone{Err: err, Now: s.now()})
		})
	})
}

// optional is a backend whose work is done where the kernel lets it and
// skipped where not (no writable IRQs in a container, say): it never keeps
// the shield from the units or cgroups that matter.
type optional struct{ shield.Backend }

func (o optional) Check(ctx context.Context) error { return nil }

func (o optional) Save(ctx context.Context) (json.RawMessage, error) {
	if err := o.Backend.Check(ctx); err != nil {
		if errors.Is(err, shield.ErrUnsupported) {
			return json.RawMessage("null"), nil
		}
		return nil, err
	}
	return o.Backend.Save(ctx)
}

func (o optional) Confine(ctx context.Context, saved json.RawMessage, hk cpuset.Set) error {
	if string(saved) == "null" {
		return nil
	}
	return o.Backend.Confine(ctx, saved, hk)
}

func (o optional) Restore(ctx context.Context, saved json.RawMessage) error {
	if string(saved) == "null" {
		return nil
	}
	return o.Backend.Restore(ctx, saved)
}

// Report passes on what the backend left out, if it says.
func (o optional) Report() string {
	if r, ok := o.Backend.(shield.Reporter); ok {
		return r.Report()
	}
	return ""
}
