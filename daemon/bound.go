package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/perflock/perflock/cgroup"
)

// A cluster scheduler's Prolog (contrib/slurm) asks for a lease bound to
// the cgroup the scheduler made for its job: acquire with bind. The daemon
// places nothing there; the job is that cgroup's processes, and the lease
// ends once the cgroup has had a process and has none left, or is
// removed, so a job whose Epilog never runs still lets go. Only root and
// the users perflockd --bind-users names may ask: the lease holds the
// machine for processes that are not the client's.

// defaultBindGrace is how long a bound cgroup may stay without a process
// after the grant (acquire's bind_grace_ms, when 0).
const defaultBindGrace = time.Minute

// bindPoll is how often a bound cgroup is looked at until it first has a
// process; from then on the kernel's notification is waited for.
const bindPoll = 100 * time.Millisecond

// mayBind reports whether uid may bind a lease to a cgroup.
func (s *server) mayBind(uid uint32) bool {
	return uid == 0 || slices.Contains(s.cfg.BindUIDs, uid)
}

// boundPlacement is a job's place that a scheduler made: nothing of it is
// the daemon's to remove or kill.
type boundPlacement struct {
	path, dir string
	grace     time.Duration
	released  chan struct{} // closed by Stop: the lease ends, the processes run on
	once      sync.Once
}

func newBoundPlacement(mount, path string, grace time.Duration) *boundPlacement {
	if grace <= 0 {
		grace = defaultBindGrace
	}
	return &boundPlacement{path: path, dir: filepath.Join(mount, path), grace: grace, released: make(chan struct{})}
}

func (b *boundPlacement) Where() string { return b.path }

// WaitEmpty returns once the cgroup, having had a process, has none (or is
// gone), once none came within the grace, or once Stop released it.
func (b *boundPlacement) WaitEmpty(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-b.released:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := b.waitFirst(ctx)
	if err == nil {
		err = cgroup.WaitEmptyDir(ctx, b.dir)
	}
	select {
	case <-b.released:
		return nil
	default:
	}
	if errors.Is(err, errNeverPopulated) {
		return nil
	}
	return err
}

var errNeverPopulated = errors.New("the cgroup had no process within its grace")

// waitFirst returns nil once the cgroup has had a process, errNeverPopulated
// once the grace passed without one. A process that came and went between
// two looks has left CPU time in the cgroup's cpu.stat (kept by cgroup2
// with no controller enabled).
func (b *boundPlacement) waitFirst(ctx context.Context) error {
	deadline := time.Now().Add(b.grace)
	t := time.NewTicker(bindPoll)
	defer t.Stop()
	for {
		if up, err := cgroup.Populated(b.dir); err == nil && up {
			return nil
		}
		if st, err := cgroup.ReadCPUStat(b.dir); err == nil && st.CPU > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errNeverPopulated
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (b *boundPlacement) Populated(ctx context.Context) (bool, error) { return cgroup.Populated(b.dir) }

// Remove leaves the cgroup to the scheduler that made it.
func (b *boundPlacement) Remove() error { return nil }

// Stop ends the lease without touching the processes: they are the
// scheduler's, which ends its job its own way.
func (b *boundPlacement) Stop(ctx context.Context, grace time.Duration) error {
	b.once.Do(func() { close(b.released) })
	return nil
}

func (b *boundPlacement) CgroupDir(ctx context.Context) (string, error) {
	if _, err := os.Stat(b.dir); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("the bound cgroup %s does not exist", b.path)
	}
	return b.dir, nil
}

func (b *boundPlacement) EnforcesMaxRuntime() bool { return false }
