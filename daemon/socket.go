package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// openSocket is the listener Run serves: the one socket activation passed,
// or a socket made at cfg.Socket under an instance lock that lasts as long
// as the daemon (unlock lets go of it).
func openSocket(cfg Config) (ln *net.UnixListener, unlock func(), err error) {
	if cfg.Listener != nil {
		return cfg.Listener, func() {}, nil
	}
	if cfg.Socket == "" {
		return nil, nil, fmt.Errorf("%w: no socket path", ErrConfig)
	}
	if err := checkSocketDir(filepath.Dir(cfg.Socket)); err != nil {
		return nil, nil, err
	}
	if unlock, err = lockInstance(cfg.Socket+".lock", cfg.Logger); err != nil {
		return nil, nil, err
	}
	if ln, err = listen(cfg.Socket, cfg.SocketMode); err != nil {
		unlock()
		return nil, nil, err
	}
	return ln, unlock, nil
}

// lockInstance takes an exclusive lock that lives as long as the daemon.
// A lock file that is not the daemon's own (see ownFile) could be another
// user's, held to keep the daemon from starting: the daemon removes it and
// makes its own, where it may (root, or the folder's owner, in a sticky
// folder); where it may not, it refuses to start, saying why.
func lockInstance(path string, log *slog.Logger) (func(), error) {
	for tries := 0; ; tries++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
		if err == nil {
			if err = ownFile(f); err == nil {
				return lockFile(f, path)
			}
			f.Close()
		} else if fi, lerr := os.Lstat(path); lerr != nil || own(path, fi, false) == nil {
			return nil, fmt.Errorf("daemon: lock %s: %w", path, err)
		} else {
			err = ownInfo(path, fi) // a symlink, or a file others may keep this daemon from opening
		}
		if tries == 2 {
			return nil, fmt.Errorf("daemon: lock %s: it is not perflockd's own, and it came back each time it was removed: %w", path, err)
		}
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return nil, fmt.Errorf("daemon: the lock file %s is not perflockd's own, and this daemon may not remove it (%w): "+
				"someone may be keeping perflockd from starting; have root remove it, or put the socket in a directory of your own: %w", path, rerr, err)
		}
		log.Warn("removed a lock file that was not perflockd's own", "why", err)
	}
}

// lockFile locks f, the lock file at path, for as long as the daemon runs.
func lockFile(f *os.File, path string) (func(), error) {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (lock %s)", ErrRunning, path)
		}
		return nil, fmt.Errorf("daemon: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// listen replaces a stale socket file (its daemon is gone: we hold the lock)
// and listens on path, in a directory checkSocketDir has approved.
func listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%w: %s exists and is not a socket", ErrConfig, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("daemon: remove stale socket: %w", err)
		}
	}
	// Create the socket with no access, then open it up: no window in which
	// it has the wrong mode.
	old := unix.Umask(0o777)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("daemon: listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("daemon: chmod %s: %w", filepath.Base(path), err)
	}
	return ln, nil
}

// checkSocketDir refuses a socket directory that is a symlink, belongs to
// another user (root's is fine), or that group or others may write to
// without the sticky bit: someone else could replace the socket.
func checkSocketDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("%w: socket directory: %w", ErrConfig, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 || !fi.IsDir() {
		return fmt.Errorf("%w: socket directory %s is a symlink or not a directory", ErrConfig, dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: socket directory %s belongs to uid %d, not to root or this user", ErrConfig, dir, st.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("%w: socket directory %s is writable by group or others (mode %v)", ErrConfig, dir, fi.Mode().Perm())
	}
	return nil
}

func peerCred(nc *net.UnixConn) (*unix.Ucred, error) {
	raw, err := nc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil {
		return nil, err
	}
	return cred, cerr
}

// ErrSocketGone: the socket file the daemon listens on was removed or
// replaced; no client can reach it any more, so it stops (its jobs keep
// running, and the next daemon adopts them).
var ErrSocketGone = errors.New("daemon: the socket file is gone")

// socketID names a socket file: its device and inode.
type socketID struct{ dev, ino uint64 }

// idOf is the socket file at path, zero if there is none.
func idOf(path string) socketID {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return socketID{}
	}
	return socketID{uint64(st.Dev), st.Ino}
}

// checkSocket reports ErrSocketGone once the socket file the daemon made
// is no longer at its path; it then leaves the path to whoever has it.
func (s *server) checkSocket() error {
	if s.sockID == (socketID{}) || idOf(s.cfg.Socket) == s.sockID {
		return nil
	}
	s.ln.SetUnlinkOnClose(false)
	s.log.Error("the socket file was removed or replaced: no client can reach this perflockd, so it stops; its jobs keep running and the next perflockd adopts them", "socket", s.cfg.Socket)
	return fmt.Errorf("%w: %s", ErrSocketGone, s.cfg.Socket)
}
