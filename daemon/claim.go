package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ErrDriverBusy: another perflockd of this machine already drives the same
// jobs (the systemd slices, or the cgroupfs subtree). Two daemons on one
// set of jobs would adopt, freeze and thaw each other's: a per-user
// daemon started as root, say, would thaw the system daemon's frozen pls
// jobs while its exclusive job runs.
var ErrDriverBusy = errors.New("daemon: another perflockd drives these jobs")

// claimName takes an abstract Unix socket name as a lock that lasts as
// long as the returned closer is open (and so at most as long as this
// process): bind fails while another process holds it. Abstract names
// leave no file behind after a crash. They are per network namespace,
// which is where a second perflockd of the same service manager would be.
func claimName(name string) (io.Closer, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("daemon: claim %s: %w", name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@" + name}); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, ErrDriverBusy
		}
		return nil, fmt.Errorf("daemon: claim %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// claimDir takes an exclusive flock on a directory (a cgroup's: cgroupfs
// keeps locks on its directories like any file system) for as long as the
// returned closer is open.
func claimDir(dir string) (io.Closer, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("daemon: claim %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrDriverBusy
		}
		return nil, fmt.Errorf("daemon: claim %s: %w", dir, err)
	}
	return f, nil
}
