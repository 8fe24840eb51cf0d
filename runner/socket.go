package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// EnvSocket names the environment variable that overrides socket discovery.
const EnvSocket = "PERFLOCK_SOCKET"

// SocketName is the socket's file name inside its directory, and LogName the
// autostarted daemon's log file next to it.
const (
	SocketName = "perflock.sock"
	LogName    = "perflockd.log"
)

// SystemSocket is the system daemon's socket. When it exists, clients use it
// and never start a daemon of their own. A variable so tests can move it.
var SystemSocket = "/run/perflock/" + SocketName

// userTempDir is where per-user socket directories go when there is no
// $XDG_RUNTIME_DIR. A variable so tests can move it.
var userTempDir = "/tmp"

// Socket says where a daemon listens and whether a client may start one
// there.
type Socket struct {
	Path string
	// System is set for the system daemon's socket: clients never start
	// that daemon themselves.
	System bool
	// PerUser is set for the user's own default socket (see [UserSocket]):
	// the only one where clients start a daemon when none listens.
	PerUser bool
	// NamedBy says who named the path: "--socket" or [EnvSocket]; "" when
	// it was discovered.
	NamedBy string
}

// without says how to stop naming the socket, for messages.
func (s Socket) without() string {
	if s.NamedBy == EnvSocket {
		return "unset " + EnvSocket
	}
	return "leave out " + s.NamedBy
}

// LogPath is the log file of a daemon started for this socket.
func (s Socket) LogPath() string { return filepath.Join(filepath.Dir(s.Path), LogName) }

// Discover finds the daemon's socket, the same way for every command:
//
//  1. flag, when not empty (the --socket option);
//  2. $PERFLOCK_SOCKET, when not empty;
//  3. [SystemSocket], when it exists;
//  4. the per-user socket $XDG_RUNTIME_DIR/perflock/perflock.sock, or
//     /tmp/perflock-$UID/perflock.sock without $XDG_RUNTIME_DIR. Its
//     directory is created with mode 0700 if missing, and refused with
//     ErrUnsafeDir if it is a symlink, not owned by the user, or accessible
//     to group or others.
//
// For 1 and 2 the directory is not checked: the user chose it. Only 4 is
// PerUser (clients start a daemon there), and 1 or 2 when they name that
// very path.
func Discover(flag string) (Socket, error) {
	if flag != "" {
		return explicitSocket(flag, "--socket")
	}
	if env := os.Getenv(EnvSocket); env != "" {
		return explicitSocket(env, EnvSocket)
	}
	if _, err := os.Stat(SystemSocket); err == nil {
		return Socket{Path: SystemSocket, System: true}, nil
	}
	p, err := UserSocket()
	if err != nil {
		return Socket{}, err
	}
	return Socket{Path: p, PerUser: true}, nil
}

// UserSocket is the per-user daemon's socket,
// $XDG_RUNTIME_DIR/perflock/perflock.sock or /tmp/perflock-$UID/perflock.sock.
// It creates the directory (mode 0700) if missing and fails with
// ErrUnsafeDir if it is a symlink, not owned by the user, or accessible to
// group or others.
func UserSocket() (string, error) {
	dir := userSocketDir()
	if err := ensurePrivateDir(dir, os.Getuid()); err != nil {
		return "", err
	}
	return filepath.Join(dir, SocketName), nil
}

// explicitSocket is the socket at p, which namedBy names.
func explicitSocket(p, namedBy string) (Socket, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return Socket{}, fmt.Errorf("runner: socket path %q: %w", p, err)
	}
	return Socket{
		Path:    abs,
		System:  abs == SystemSocket,
		PerUser: abs == filepath.Join(userSocketDir(), SocketName),
		NamedBy: namedBy,
	}, nil
}

// userSocketDir is the per-user daemon's directory (not checked).
func userSocketDir() string {
	if x := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		if fi, err := os.Stat(x); err == nil && fi.IsDir() {
			return filepath.Join(x, "perflock")
		}
	}
	return filepath.Join(userTempDir, "perflock-"+strconv.Itoa(os.Getuid()))
}

// ensurePrivateDir creates dir with mode 0700 if it does not exist, then
// checks that it is a real directory (not a symlink), owned by uid, with no
// group or other permissions.
func ensurePrivateDir(dir string, uid int) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("runner: create socket directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("runner: socket directory: %w", err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: %s is a symlink; remove it", ErrUnsafeDir, dir)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is not a directory; remove it", ErrUnsafeDir, dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
		return fmt.Errorf("%w: %s is owned by uid %d, not %d; remove it or set %s", ErrUnsafeDir, dir, st.Uid, uid, EnvSocket)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o; run chmod 700 %s", ErrUnsafeDir, dir, perm, dir)
	}
	return nil
}
