// Package shield confines the machine's other work to housekeeping CPUs
// while an exclusive job runs, and puts everything back exactly as it was
// after: a CPU shield, per run.
//
// A Shield drives one or more Backends, each one place where other work is
// confined:
//
//   - Systemd: runtime AllowedCPUs= on init.scope, system.slice,
//     user.slice, machine.slice and perflock's shared slice (not on the
//     exclusive slice: the job keeps every CPU).
//   - Cgroupfs: cpuset.cpus of the top-level cgroups of a cgroup2 tree
//     other than perflock's, and of perflock's shared cgroup.
//   - IRQ: the CPU affinity of interrupts, /proc/irq/*/smp_affinity_list.
//   - Workqueue: the CPUs of unbound kernel work,
//     /sys/devices/virtual/workqueue/cpumask.
//
// Raise saves every backend's earlier settings to a state file before it
// changes anything, and Lower restores them and removes the file. The state
// file belongs beside the daemon's socket in a folder that a reboot clears
// (/run), since runtime AllowedCPUs=, IRQ affinities and the workqueue mask
// all end with the boot, and it outlives the daemon otherwise: a daemon
// killed while the shield is raised leaves the machine confined, and the
// next one either Adopts the file (its exclusive job still runs: the shield
// stays, and Lower restores it when the job ends) or calls RestoreLeftover.
// Nothing depends on the daemon's memory.
//
// What no backend can confine: per-CPU kernel threads (ksoftirqd/N,
// kworker/N:M, migration/N); the timer tick and the CPUs a boot-time
// isolcpus= or nohz_full= set aside; interrupts the kernel manages itself
// (IRQ counts them); processes in the root cgroup of a host without
// systemd (Cgroupfs reports them); and work started after Raise in a
// top-level unit or cgroup that did not exist at Raise. irqbalance, where
// it runs, may move interrupts back during a run. On Linux before 6.2
// (kernel commit da019032819a) changing a cgroup's CPUs resets the CPU
// affinity a task chose for itself (taskset) to its cgroup's CPUs: after
// Lower such a task runs on every CPU of its cgroup, not on the ones it
// chose.
package shield

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/perflock/perflock/internal/atomicfile"
	"github.com/perflock/perflock/internal/cpuset"
	"github.com/perflock/perflock/internal/ownfile"
)

// DefaultOnline is where the kernel lists the online CPUs.
const DefaultOnline = "/sys/devices/system/cpu/online"

// DefaultPossible is where the kernel lists the CPUs that may ever come
// online. A cgroup2 cpuset.cpus of these is, in effect, one of none: the
// parent's CPUs, now and after CPUs come online.
const DefaultPossible = "/sys/devices/system/cpu/possible"

// rollbackTimeout bounds a roll back or restore that runs after the
// caller's context ended: one that ctx's cancellation must not stop, or the
// machine would stay confined.
const rollbackTimeout = 30 * time.Second

// A Backend is one place where the machine's other work is confined. Its
// methods are called by one Shield, never at the same time.
//
// Save and Confine work on the same saved state: Save reads the earlier
// settings of everything the backend will change, and Confine changes only
// what Save listed, so that Restore puts back exactly what Confine touched.
// Backends keep no state between calls that Restore needs: the saved state,
// which the Shield keeps in its state file, is all.
type Backend interface {
	// Name names the backend in the state file and in errors: "systemd",
	// "cgroupfs", "irq", "workqueue".
	Name() string
	// Check reports whether the backend can work here, changing nothing:
	// nil, or an error wrapping ErrUnsupported that says why not.
	Check(ctx context.Context) error
	// Save returns the settings Confine will change, as JSON, changing
	// nothing.
	Save(ctx context.Context) (json.RawMessage, error)
	// Confine confines what saved lists to the housekeeping CPUs. On an
	// error it may have changed part of it: the caller restores.
	Confine(ctx context.Context, saved json.RawMessage, housekeeping cpuset.Set) error
	// Restore puts back saved, trying every item even after a failure;
	// restoring twice, or what was never confined, does no harm. A saved
	// state it cannot believe (not its format, names outside its tree) is
	// an error wrapping ErrState, and nothing is changed.
	Restore(ctx context.Context, saved json.RawMessage) error
}

// A Reporter is a Backend that can say, after Confine, what it left out:
// IRQs that refused the mask, processes no cgroup can confine.
type Reporter interface {
	// Report is one line about the last Confine, "" when there is nothing
	// to say.
	Report() string
}

// State is the state file: the housekeeping CPUs, and each backend's saved
// settings in the order the backends were confined.
type State struct {
	Housekeeping cpuset.Set `json:"housekeeping"`
	Backends     []Saved    `json:"backends"`
}

// Saved is one backend's saved settings, in its own format.
type Saved struct {
	Backend string          `json:"backend"`
	State   json.RawMessage `json:"state"`
}

// A Shield confines the machine's other work through its backends: one
// per daemon. Its methods may be called from several goroutines; each
// runs alone.
type Shield struct {
	statePath string
	online    string
	backends  []Backend

	mu    sync.Mutex
	state *State // what is confined (Raise or Adopt) and not yet restored
}

// New returns a Shield that keeps its state in statePath and confines
// through backends, in that order (restoring in reverse). Two backends of
// one name are a programming error: New panics.
func New(statePath string, backends ...Backend) *Shield {
	seen := map[string]bool{}
	for _, b := range backends {
		if seen[b.Name()] {
			panic("shield.New: two backends named " + b.Name())
		}
		seen[b.Name()] = true
	}
	return &Shield{statePath: statePath, online: DefaultOnline, backends: backends}
}

// WithOnline makes the Shield read the online CPUs from path, in the list
// format, instead of DefaultOnline (for tests). Call it before any other
// method. It returns s.
func (s *Shield) WithOnline(path string) *Shield {
	s.online = path
	return s
}

// CheckHousekeeping reports whether housekeeping can be the CPUs the
// machine's other work keeps when online are the online CPUs: nil, or an
// error wrapping ErrHousekeeping that says what to give instead. It must
// name at least one CPU, only online ones, and leave the job at least one.
func CheckHousekeeping(housekeeping, online cpuset.Set) error {
	suggest := "0"
	if cpus := online.CPUs(); len(cpus) > 0 {
		suggest = fmt.Sprint(cpus[0])
	}
	switch {
	case housekeeping.IsEmpty():
		return fmt.Errorf("%w: none given: give the CPUs the machine's other work keeps while a job runs, such as %s", ErrHousekeeping, suggest)
	case !housekeeping.SubsetOf(online):
		return fmt.Errorf("%w: CPUs %s are not online (online: %s): give online CPUs, such as %s",
			ErrHousekeeping, housekeeping.Difference(online), online, suggest)
	case online.SubsetOf(housekeeping):
		return fmt.Errorf("%w: %s is every online CPU, which leaves the job none of its own: give fewer, such as %s",
			ErrHousekeeping, housekeeping, suggest)
	}
	return nil
}

func (s *Shield) checkHousekeeping(housekeeping cpuset.Set) error {
	online, err := cpuset.ReadFile(s.online)
	if err != nil {
		return fmt.Errorf("shield: online CPUs: %w", err)
	}
	return CheckHousekeeping(housekeeping, online)
}

// Check reports whether Raise(housekeeping) can work here, changing
// nothing: the housekeeping CPUs (see CheckHousekeeping) and every
// backend's Check, all joined into one error; nil when all can.
func (s *Shield) Check(ctx context.Context, housekeeping cpuset.Set) error {
	errs := []error{s.checkHousekeeping(housekeeping)}
	for _, b := range s.backends {
		errs = append(errs, b.Check(ctx))
	}
	return errors.Join(errs...)
}

// Raised reports whether the shield is raised (by Raise or taken over by
// Adopt) and not yet lowered.
func (s *Shield) Raised() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state != nil
}

// Housekeeping is the CPUs other work is confined to while the shield is
// raised; the empty set otherwise.
func (s *Shield) Housekeeping() cpuset.Set {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == nil {
		return cpuset.Set{}
	}
	return s.state.Housekeeping
}

// Report is a line per backend with something to say about the last Raise
// ("irq: 3 of 40 IRQs refused the mask …"); none after Adopt.
func (s *Shield) Report() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []string
	for _, b := range s.backends {
		if r, ok := b.(Reporter); ok {
			if l := r.Report(); l != "" {
				lines = append(lines, b.Name()+": "+l)
			}
		}
	}
	return lines
}

// Raise confines the machine's other work to the housekeeping CPUs. It
// first has every backend Save its earlier settings and writes them to the
// state file (atomically); only then does it Confine, backend by backend.
// If a backend fails midway, Raise restores, in reverse, every backend it
// has confined (the failed one included) and removes the state file, and
// returns the error; if that restore fails too, the state file stays, with
// what could not be restored, for RestoreLeftover. The roll back runs even
// when ctx has ended (under a limit of its own).
//
// Raise fails with ErrRaised while raised, with ErrLeftover while a state
// file exists, and with ErrHousekeeping for housekeeping CPUs that cannot
// be (see CheckHousekeeping); then, and when a Save fails, nothing has
// changed.
func (s *Shield) Raise(ctx context.Context, housekeeping cpuset.Set) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != nil {
		return ErrRaised
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := os.Lstat(s.statePath); err == nil {
		return fmt.Errorf("%w: %s", ErrLeftover, s.statePath)
	}
	if err := s.checkHousekeeping(housekeeping); err != nil {
		return err
	}
	st := &State{Housekeeping: housekeeping}
	for _, b := range s.backends {
		saved, err := b.Save(ctx)
		if err != nil {
			return err
		}
		st.Backends = append(st.Backends, Saved{Backend: b.Name(), State: saved})
	}
	if err := s.writeState(st); err != nil {
		return err
	}
	for i, b := range s.backends {
		err := ctx.Err()
		if err == nil {
			err = b.Confine(ctx, st.Backends[i].State, housekeeping)
		}
		if err == nil {
			continue
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		done := &State{Housekeeping: housekeeping, Backends: st.Backends[:i+1]}
		if left, rerr := s.restore(rctx, done); rerr != nil {
			return errors.Join(err, fmt.Errorf("shield: roll back: %w", s.keep(left, rerr)))
		}
		return errors.Join(err, s.removeState())
	}
	s.state = st
	return nil
}

// Lower restores what Raise (or Adopt) confined, backend by backend in
// reverse, and removes the state file. It does nothing when the shield is
// not raised. When a backend fails, Lower still restores the others, keeps
// in the state file only what it could not restore, and returns the error;
// the shield stays raised, and Lower may be called again. ctx bounds the
// backends' calls to systemd: a cancelled ctx makes them fail, and leaves
// the state file.
func (s *Shield) Lower(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == nil {
		return nil
	}
	left, err := s.restore(ctx, s.state)
	if err != nil {
		s.state = left
		return s.keep(left, err)
	}
	s.state = nil
	return s.removeState()
}

// Adopt takes over the state file an earlier Shield left (its daemon was
// killed while an exclusive job ran shielded, and the job still runs): the
// machine stays confined, Raised reports true, and Lower restores the
// settings saved before. It reports whether there was a state file. A state
// file that is not the daemon's own (see package ownfile) or cannot be
// read is an error wrapping ErrState; one naming a backend this Shield was
// not given wraps ErrUnknownBackend; either way nothing is adopted and the
// file stays. Adopt while raised fails with ErrRaised.
func (s *Shield) Adopt() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != nil {
		return false, ErrRaised
	}
	st, err := s.loadState()
	if st == nil || err != nil {
		return st != nil, err
	}
	for _, sv := range st.Backends {
		if s.backend(sv.Backend) == nil {
			return true, fmt.Errorf("%w: %s names %q (give the Shield that backend, or restore by hand and remove the file)", ErrUnknownBackend, s.statePath, sv.Backend)
		}
	}
	s.state = st
	return true, nil
}

// RestoreLeftover restores the settings in a state file an earlier Shield
// left (its daemon was killed while the shield was raised, and no job of
// it runs any longer) and removes the file. It reports whether there was
// one. It needs the backends the file names; what it cannot restore stays
// in the file, and the error says why (ErrState, ErrUnknownBackend, a
// backend's). RestoreLeftover while raised fails with ErrRaised: use
// Lower.
func (s *Shield) RestoreLeftover(ctx context.Context) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != nil {
		return false, ErrRaised
	}
	st, err := s.loadState()
	if st == nil || err != nil {
		return st != nil, err
	}
	if left, err := s.restore(ctx, st); err != nil {
		return true, s.keep(left, err)
	}
	return true, s.removeState()
}

func (s *Shield) backend(name string) Backend {
	for _, b := range s.backends {
		if b.Name() == name {
			return b
		}
	}
	return nil
}

// restore restores st's backends in reverse. It returns what it could not
// restore, in st's order (nil when all were), and the errors.
func (s *Shield) restore(ctx context.Context, st *State) (*State, error) {
	var errs []error
	var failed []Saved
	for i := len(st.Backends) - 1; i >= 0; i-- {
		sv := st.Backends[i]
		b := s.backend(sv.Backend)
		if b == nil {
			errs = append(errs, fmt.Errorf("%w: %q", ErrUnknownBackend, sv.Backend))
			failed = append(failed, sv)
			continue
		}
		if err := b.Restore(ctx, sv.State); err != nil {
			errs = append(errs, err)
			failed = append(failed, sv)
		}
	}
	if len(failed) == 0 {
		return nil, nil
	}
	slices.Reverse(failed)
	return &State{Housekeeping: st.Housekeeping, Backends: failed}, errors.Join(errs...)
}

// keep writes what could not be restored to the state file, for a later
// Lower or RestoreLeftover, and returns err saying so. If the file cannot
// be rewritten, the earlier one (which holds all of it and more) stays.
func (s *Shield) keep(left *State, err error) error {
	if werr := s.writeState(left); werr != nil {
		return fmt.Errorf("%w (earlier settings kept in %s; %w)", err, s.statePath, werr)
	}
	return fmt.Errorf("%w (earlier settings kept in %s)", err, s.statePath)
}

// writeState writes the state file atomically (internal/atomicfile),
// creating its folder where missing.
func (s *Shield) writeState(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("shield: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.statePath), 0o755); err != nil {
		return fmt.Errorf("shield: %w", err)
	}
	if err := atomicfile.WriteFile(s.statePath, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("shield: save the earlier settings: %w", err)
	}
	return nil
}

func (s *Shield) removeState() error {
	if err := os.Remove(s.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("shield: %w", err)
	}
	return nil
}

// loadState reads the state file: nil, nil if there is none; a non-nil
// State with an error when there is one that cannot be believed or read.
func (s *Shield) loadState() (*State, error) {
	b, err := ownfile.Read(s.statePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return &State{}, fmt.Errorf("%w: %w: check where the machine's units, cgroups and IRQs may run, then remove it", ErrState, err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return &st, fmt.Errorf("%w %s: %w", ErrState, s.statePath, err)
	}
	seen := map[string]bool{}
	for _, sv := range st.Backends {
		if sv.Backend == "" || seen[sv.Backend] {
			return &st, fmt.Errorf("%w %s: backend %q missing or twice", ErrState, s.statePath, sv.Backend)
		}
		seen[sv.Backend] = true
	}
	return &st, nil
}
