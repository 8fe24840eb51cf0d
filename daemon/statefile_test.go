package daemon

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// nobody is the uid that files planted by "someone else" belong to.
const nobody = 65534

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user")
	}
}

// stickyDir is a folder like /tmp: anyone may add files, only their owner
// (or root) remove them.
func stickyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	return dir
}

// plant writes a file as if uid had put it there.
func plant(t *testing.T, path, content string, uid int) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func owner(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// The daemon believes a state file only if it is its own: a regular file
// with one link, of its uid, that group and others may not write; it
// follows no symlink, and a FIFO does not block it.
func TestStateFilesAreBelievedOnlyWhenTheDaemonsOwn(t *testing.T) {
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n) }
	os.WriteFile(path("own"), []byte("x"), 0o600)
	os.WriteFile(path("readable"), []byte("x"), 0o644)
	os.WriteFile(path("groupwritable"), []byte("x"), 0o600)
	os.Chmod(path("groupwritable"), 0o620)
	os.Symlink(path("own"), path("symlink"))
	unix.Mkfifo(path("fifo"), 0o600)
	os.WriteFile(path("linked"), []byte("x"), 0o600)
	os.Link(path("linked"), path("link2"))
	os.Mkdir(path("dir"), 0o700)
	cases := map[string]error{
		"own": nil, "readable": nil, "groupwritable": errUntrusted, "symlink": errUntrusted,
		"fifo": errUntrusted, "linked": errUntrusted, "dir": errUntrusted, "missing": fs.ErrNotExist,
	}
	if os.Geteuid() == 0 {
		plant(t, path("others"), "x", nobody)
		cases["others"] = errUntrusted
	}
	for name, want := range cases {
		b, err := readStateFile(path(name))
		if want == nil && (err != nil || string(b) != "x") {
			t.Errorf("%s: %q, %v; want it read", name, b, err)
		}
		if want != nil && !errors.Is(err, want) {
			t.Errorf("%s: %q, %v; want %v", name, b, err, want)
		}
	}
	os.Mkdir(path("opendir"), 0o777)
	os.Chmod(path("opendir"), 0o777)
	os.Symlink(path("dir"), path("dirlink"))
	dirs := map[string]error{"dir": nil, "opendir": errUntrusted, "dirlink": errUntrusted, "own": errUntrusted, "missing": fs.ErrNotExist}
	if os.Geteuid() == 0 {
		os.Mkdir(path("othersdir"), 0o755)
		os.Chown(path("othersdir"), nobody, nobody)
		dirs["othersdir"] = errUntrusted
	}
	for name, want := range dirs {
		if err := checkOwnDir(path(name)); !errors.Is(err, want) {
			t.Errorf("checkOwnDir(%s) = %v, want %v", name, err, want)
		}
	}
}

// A rejoin key someone else put beside the socket (a sticky folder such as
// /tmp), or a symlink, is not used: tokens made with a key its author knows
// could be forged. The daemon makes a fresh key of its own.
func TestPlantedKeyIsReplacedByAFreshOne(t *testing.T) {
	planted := "0123456789abcdef0123456789abcdef"
	check := func(t *testing.T, dir string) {
		t.Helper()
		st, err := loadRunState(dir, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if string(st.key) == planted {
			t.Fatal("the daemon uses the planted key")
		}
		b, err := readStateFile(filepath.Join(dir, "key"))
		if err != nil || string(b) != string(st.key) {
			t.Errorf("the key file: %v; want the daemon's own, holding its key", err)
		}
	}
	t.Run("symlink", func(t *testing.T) {
		dir := t.TempDir()
		elsewhere := filepath.Join(t.TempDir(), "known")
		os.WriteFile(elsewhere, []byte(planted), 0o600)
		os.Symlink(elsewhere, filepath.Join(dir, "key"))
		check(t, dir)
	})
	t.Run("another user's", func(t *testing.T) {
		requireRoot(t)
		dir := stickyDir(t)
		plant(t, filepath.Join(dir, "key"), planted, nobody)
		check(t, dir)
	})
}

// A ticket mark someone else put there is ignored: it would make the
// daemon accept rejoins up to the ticket it names.
func TestPlantedTicketMarkIsIgnored(t *testing.T) {
	requireRoot(t)
	dir := stickyDir(t)
	plant(t, filepath.Join(dir, "tickets"), "1000000 5\n", nobody)
	st, err := loadRunState(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.started != 0 || st.waiters != 0 {
		t.Errorf("started at mark %d with %d waiters, want 0 and 0: the planted mark was believed", st.started, st.waiters)
	}
	if got := owner(t, filepath.Join(dir, "tickets")); got != 0 {
		t.Errorf("the tickets file belongs to uid %d after start, want the daemon's own", got)
	}
}

// Someone else's lock file beside the socket, locked, would make the daemon
// believe another perflockd serves (and exit 0). A root daemon removes it,
// takes a lock of its own and serves.
func TestPlantedLockFileDoesNotKeepTheDaemonFromServing(t *testing.T) {
	requireRoot(t)
	dir := stickyDir(t)
	sock := filepath.Join(dir, "s")
	plant(t, sock+".lock", "", nobody)
	held, err := os.Open(sock + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := unix.Flock(int(held.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := open(ctx, Config{Socket: sock, Driver: "none", Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("the daemon did not start: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- s.serve() }()
	dial(t, sock).hello()
	if got := owner(t, sock+".lock"); got != 0 {
		t.Errorf("the lock file belongs to uid %d, want the daemon's own", got)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// A history that cannot be parsed is moved aside, saying so, and the
// daemon starts with an empty one (it used to refuse to start, exit 69).
func TestHistoryThatCannotBeParsedIsMovedAside(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, historyFile), []byte("{garbage"), 0o644)
	checkMovedAside(t, dir, "{garbage")
}

// So is a history someone else put there: it could say anything about any
// user's keys.
func TestPlantedHistoryIsMovedAside(t *testing.T) {
	requireRoot(t)
	dir := stickyDir(t)
	planted := `{"completed": {"0/nightly": 4102444800000}}`
	plant(t, filepath.Join(dir, historyFile), planted, nobody)
	checkMovedAside(t, dir, planted)
}

func checkMovedAside(t *testing.T, dir, content string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := open(ctx, Config{Socket: filepath.Join(dir, "s"), Driver: "none", Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("the daemon did not start: %v", err)
	}
	defer func() { s.stop(); s.wg.Wait(); s.ln.Close(); s.unlock() }()
	if _, ok := s.history.lastSuccess(0, "nightly"); ok || s.history.n != 0 {
		t.Errorf("the history holds %d entries, want none", s.history.n)
	}
	aside, _ := filepath.Glob(filepath.Join(dir, historyFile+".bad-*"))
	if len(aside) != 1 {
		t.Fatalf("moved aside: %v, want one history.json.bad-TIME", aside)
	}
	if b, _ := os.ReadFile(aside[0]); string(b) != content {
		t.Errorf("%s holds %q, want the old history", aside[0], b)
	}
	if _, err := os.Lstat(filepath.Join(dir, historyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("history.json still there: %v", err)
	}
	if !strings.HasPrefix(filepath.Base(aside[0]), historyFile+".bad-2") {
		t.Errorf("aside as %s, want history.json.bad-TIME", aside[0])
	}
}
