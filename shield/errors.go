package shield

import "errors"

// Errors of this package. They are wrapped with the unit, path or backend
// concerned: test them with errors.Is.
var (
	// ErrUnsupported is a backend that cannot work on this machine; the
	// wrapping error says why (no cpuset controller in the cgroup2 tree,
	// systemd too old, not root, …).
	ErrUnsupported = errors.New("shield: not supported here")
	// ErrHousekeeping is a housekeeping CPU set that cannot be used: empty,
	// every online CPU, or naming CPUs that are not online.
	ErrHousekeeping = errors.New("shield: bad housekeeping CPUs")
	// ErrRaised is Raise or Adopt while the shield is raised.
	ErrRaised = errors.New("shield: already raised (Lower first)")
	// ErrLeftover is Raise while a state file of an earlier shield exists:
	// Adopt it or RestoreLeftover first.
	ErrLeftover = errors.New("shield: a state file of an earlier shield exists (Adopt or RestoreLeftover first)")
	// ErrState is a state file that cannot be believed or read back: not
	// this daemon's own, not JSON, or holding values a backend refuses.
	ErrState = errors.New("shield: bad state file")
	// ErrUnknownBackend is a state file naming a backend the Shield was
	// not given, so it cannot restore what that backend saved.
	ErrUnknownBackend = errors.New("shield: the state file names a backend this shield does not have")
	// ErrStillConfined is a restore after which the tasks of a unit or
	// cgroup still run on fewer CPUs than before the shield.
	ErrStillConfined = errors.New("shield: tasks still confined after the restore")
)
