// Package ownfile reads a state file only if the process may believe it:
// a root daemon whose state folder someone else could write to (a socket
// folder in /tmp) must not let a planted file choose what it writes to the
// machine.
package ownfile

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ErrUntrusted is a file that is not this process's own.
var ErrUntrusted = errors.New("ownfile: not this process's own")

// Read reads the file at path whole if it is this process's own: a
// regular file with one link, not a symbolic link, of this process's
// effective uid, that group and others may not write. It opens without
// following a symbolic link and without blocking on a FIFO. The error
// wraps fs.ErrNotExist when there is no file, and ErrUntrusted, saying
// why, when the file is not the process's own.
func Read(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%w: %s is a symbolic link", ErrUntrusted, path)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("ownfile: stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return nil, fmt.Errorf("%w: %s (type %o, uid %d, mode %o, %d links; want a regular file of uid %d, mode without group or other write, one link)",
			ErrUntrusted, path, st.Mode&unix.S_IFMT, st.Uid, st.Mode&0o7777, st.Nlink, os.Geteuid())
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("ownfile: read %s: %w", path, err)
	}
	return b, nil
}
