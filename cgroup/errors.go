package cgroup

import "errors"

// Errors returned by this package. They are wrapped with the path concerned (and, where there is
// one, the underlying system error), so test them with errors.Is.
var (
	// ErrNoCgroup2 means no cgroup2 hierarchy is mounted, or a path given as one is not a cgroup2
	// file system.
	ErrNoCgroup2 = errors.New("cgroup: no cgroup2 file system (the cgroupfs driver needs cgroup v2, unified or hybrid; use --driver none otherwise)")

	// ErrNotWritable means the perflock tree cannot be created or written by this process.
	ErrNotWritable = errors.New("cgroup: cgroup tree not writable (run perflockd as root, or use --driver none)")

	// ErrInvalidName means a tree name is empty, ".", absolute, not clean, or climbs out of the
	// mount with "..".
	ErrInvalidName = errors.New("cgroup: invalid tree name")

	// ErrInvalidKind means a Kind other than Exclusive or Shared was given.
	ErrInvalidKind = errors.New("cgroup: invalid job kind")

	// ErrJobExists means the cgroup for a new job already exists (an id was reused).
	ErrJobExists = errors.New("cgroup: job cgroup already exists")

	// ErrJobBusy means a job cgroup still holds processes and so cannot be removed.
	ErrJobBusy = errors.New("cgroup: job cgroup still has processes")

	// ErrInvalidFormat means a cgroup or proc file did not have the expected format.
	ErrInvalidFormat = errors.New("cgroup: invalid file format")
)
