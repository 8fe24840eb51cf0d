package runner

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// isolate points discovery at a fresh temporary world: no flag, no
// PERFLOCK_SOCKET, a system socket that does not exist, no XDG_RUNTIME_DIR.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	oldSys, oldTmp := SystemSocket, userTempDir
	SystemSocket = filepath.Join(dir, "run", SocketName)
	userTempDir = filepath.Join(dir, "tmp")
	if err := os.Mkdir(userTempDir, 0o1777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { SystemSocket, userTempDir = oldSys, oldTmp })
	t.Setenv(EnvSocket, "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	return dir
}

func makeSystemSocket(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(SystemSocket), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(SystemSocket, nil, 0o666); err != nil {
		t.Fatal(err)
	}
}

func TestDiscoverPrecedence(t *testing.T) {
	t.Run("flag beats environment and system socket", func(t *testing.T) {
		isolate(t)
		makeSystemSocket(t)
		t.Setenv(EnvSocket, "/somewhere/env.sock")
		got, err := Discover("/somewhere/flag.sock")
		if err != nil || got != (Socket{Path: "/somewhere/flag.sock", NamedBy: "--socket"}) {
			t.Fatalf("Discover = %+v, %v", got, err)
		}
	})
	t.Run("environment beats system socket", func(t *testing.T) {
		isolate(t)
		makeSystemSocket(t)
		t.Setenv(EnvSocket, "/somewhere/env.sock")
		got, err := Discover("")
		if err != nil || got != (Socket{Path: "/somewhere/env.sock", NamedBy: EnvSocket}) {
			t.Fatalf("Discover = %+v, %v", got, err)
		}
	})
	t.Run("system socket when it exists, never autostarted", func(t *testing.T) {
		isolate(t)
		makeSystemSocket(t)
		got, err := Discover("")
		if err != nil || got != (Socket{Path: SystemSocket, System: true}) {
			t.Fatalf("Discover = %+v, %v", got, err)
		}
	})
	t.Run("explicit system socket path is the system socket", func(t *testing.T) {
		isolate(t)
		got, err := Discover(SystemSocket)
		if err != nil || !got.System {
			t.Fatalf("Discover = %+v, %v", got, err)
		}
	})
	t.Run("per-user socket under XDG_RUNTIME_DIR", func(t *testing.T) {
		dir := isolate(t)
		xdg := filepath.Join(dir, "xdg")
		if err := os.Mkdir(xdg, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Setenv("XDG_RUNTIME_DIR", xdg)
		got, err := Discover("")
		want := Socket{Path: filepath.Join(xdg, "perflock", SocketName), PerUser: true}
		if err != nil || got != want {
			t.Fatalf("Discover = %+v, %v; want %+v", got, err, want)
		}
		assertPrivateDir(t, filepath.Dir(got.Path))
	})
	t.Run("per-user socket in the temporary directory without XDG_RUNTIME_DIR", func(t *testing.T) {
		isolate(t)
		got, err := Discover("")
		want := Socket{Path: filepath.Join(userTempDir, "perflock-"+strconv.Itoa(os.Getuid()), SocketName), PerUser: true}
		if err != nil || got != want {
			t.Fatalf("Discover = %+v, %v; want %+v", got, err, want)
		}
		assertPrivateDir(t, filepath.Dir(got.Path))
	})
	t.Run("naming the per-user socket is the per-user socket", func(t *testing.T) {
		isolate(t)
		p := filepath.Join(userTempDir, "perflock-"+strconv.Itoa(os.Getuid()), SocketName)
		t.Setenv(EnvSocket, p)
		got, err := Discover("")
		if err != nil || got != (Socket{Path: p, PerUser: true, NamedBy: EnvSocket}) {
			t.Fatalf("Discover = %+v, %v", got, err)
		}
	})
	t.Run("relative flag is made absolute", func(t *testing.T) {
		isolate(t)
		got, err := Discover("rel.sock")
		if err != nil || !filepath.IsAbs(got.Path) || got.System {
			t.Fatalf("Discover = %+v, %v", got, err)
		}
	})
}

func assertPrivateDir(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%s: mode %v, want a directory with mode 0700", dir, fi.Mode())
	}
}

func TestPerUserDirectoryChecks(t *testing.T) {
	uid := os.Getuid()
	t.Run("missing directory is created 0700", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "p")
		if err := ensurePrivateDir(dir, uid); err != nil {
			t.Fatal(err)
		}
		assertPrivateDir(t, dir)
	})
	t.Run("symlink is refused", func(t *testing.T) {
		base := t.TempDir()
		target := filepath.Join(base, "target")
		if err := os.Mkdir(target, 0o700); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(base, "link")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if err := ensurePrivateDir(link, uid); !errors.Is(err, ErrUnsafeDir) {
			t.Fatalf("got %v, want ErrUnsafeDir", err)
		}
	})
	t.Run("group or other access is refused", func(t *testing.T) {
		for _, mode := range []os.FileMode{0o750, 0o705, 0o777} {
			dir := filepath.Join(t.TempDir(), "p")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, mode); err != nil {
				t.Fatal(err)
			}
			if err := ensurePrivateDir(dir, uid); !errors.Is(err, ErrUnsafeDir) {
				t.Errorf("mode %04o: got %v, want ErrUnsafeDir", mode, err)
			}
		}
	})
	t.Run("another user's directory is refused", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "p")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := ensurePrivateDir(dir, uid+4242); !errors.Is(err, ErrUnsafeDir) {
			t.Fatalf("got %v, want ErrUnsafeDir", err)
		}
	})
	t.Run("a file is refused", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := ensurePrivateDir(f, uid); !errors.Is(err, ErrUnsafeDir) {
			t.Fatalf("got %v, want ErrUnsafeDir", err)
		}
	})
}
