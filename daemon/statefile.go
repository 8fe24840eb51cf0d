package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/internal/ownfile"
)

// errUntrusted: a file or folder where the daemon keeps its state (the run
// directory beside the socket, the state directory) is not the daemon's
// own. A socket directory may be sticky and writable by all (/tmp), so
// anyone could have put it there: the daemon must not believe it.
var errUntrusted = errors.New("daemon: not perflockd's own")

// readStateFile reads a file of the daemon's state whole, if it is the
// daemon's own (see openStateFile). The error wraps fs.ErrNotExist when
// there is no such file, errUntrusted when the file is not the daemon's
// own.
func readStateFile(path string) ([]byte, error) {
	b, err := ownfile.Read(path)
	if errors.Is(err, ownfile.ErrUntrusted) {
		return nil, fmt.Errorf("%w: %w", errUntrusted, err)
	}
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	return b, nil
}

// openStateFile opens a file of the daemon's state for reading, without
// following a symlink and without blocking on a FIFO, and checks that the
// daemon may believe it (ownFile). The error wraps fs.ErrNotExist when
// there is no such file, errUntrusted when the file is not the daemon's
// own; the caller closes the file.
func openStateFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%w: %s is a symbolic link", errUntrusted, path)
	}
	if err != nil {
		return nil, fmt.Errorf("daemon: open %s: %w", path, err)
	}
	if err := ownFile(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ownFile checks an open file of the daemon's state: a regular file with
// one link, of the daemon's effective uid, that group and others may not
// write. Otherwise the error wraps errUntrusted and says why.
func ownFile(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("daemon: stat %s: %w", f.Name(), err)
	}
	return ownInfo(f.Name(), fi)
}

// ownInfo is ownFile's check on what Lstat or Stat said of path.
func ownInfo(path string, fi fs.FileInfo) error {
	if err := own(path, fi, false); err != nil {
		return err
	}
	if n := fi.Sys().(*syscall.Stat_t).Nlink; n != 1 {
		return fmt.Errorf("%w: %s has %d hard links", errUntrusted, path, n)
	}
	return nil
}

// checkOwnDir checks a folder the daemon keeps state in below its run
// directory (jobs/): not a symlink, of the daemon's effective uid, and not
// writable by group or others. Otherwise the error wraps errUntrusted and
// says why; it wraps fs.ErrNotExist when there is no such folder.
func checkOwnDir(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return own(path, fi, true)
}

// own: path is a regular file (or a directory, with dir), not a symlink,
// of the daemon's effective uid, that group and others may not write.
func own(path string, fi fs.FileInfo, dir bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: %s is a symbolic link", errUntrusted, path)
	case dir && !fi.IsDir():
		return fmt.Errorf("%w: %s is not a directory (%v)", errUntrusted, path, fi.Mode().Type())
	case !dir && !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s is not a regular file (%v)", errUntrusted, path, fi.Mode().Type())
	case !ok:
		return fmt.Errorf("%w: %s: its owner cannot be told", errUntrusted, path)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%w: %s belongs to uid %d, not to perflockd's (%d)", errUntrusted, path, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%w: group or others may write %s (mode %v)", errUntrusted, path, fi.Mode().Perm())
	}
	return nil
}
