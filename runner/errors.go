package runner

import "errors"

// Errors returned by this package, wrapped with the path or value concerned;
// test them with errors.Is.
var (
	// ErrUnavailable: no daemon could be reached or started, or the
	// connection to it failed. The message says what to do.
	ErrUnavailable = errors.New("runner: perflockd unavailable")

	// ErrOverloaded: the daemon did not take the connection: its queue of
	// new connections stayed full, or it refused the connection at its
	// connection limit. Errors that wrap it wrap ErrUnavailable too.
	ErrOverloaded = errors.New("runner: perflockd overloaded")

	// ErrVersion: the daemon does not speak this client's protocol version.
	ErrVersion = errors.New("runner: protocol version not supported by perflockd")

	// ErrUnsafeDir: the per-user socket directory is a symlink, is not owned
	// by the user, or is accessible to group or others.
	ErrUnsafeDir = errors.New("runner: unsafe socket directory")

	// ErrBadTimeout: a timeout is neither a Go duration nor a number of
	// seconds, or is negative.
	ErrBadTimeout = errors.New("runner: bad timeout")

	// ErrDaemon: the daemon answered with an error message (to a hello:
	// it refused the connection).
	ErrDaemon = errors.New("runner: perflockd refused")

	// ErrDenied: the job belongs to someone else (only its owner or root
	// may cancel it).
	ErrDenied = errors.New("runner: not allowed")

	// ErrNoJob: no job has that name or ticket.
	ErrNoJob = errors.New("runner: no such job")

	// ErrNoASLR: address-space randomization cannot be turned off for the
	// job (Options.NoASLR): the kernel refused personality(2).
	ErrNoASLR = errors.New("runner: cannot turn off address-space randomization")
)
