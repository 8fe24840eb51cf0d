package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
)

func TestMain(m *testing.M) {
	handshakeTimeout = 500 * time.Millisecond
	os.Exit(m.Run())
}

// startDaemon runs a real daemon on a fresh socket and stops it at cleanup.
func startDaemon(t *testing.T, cfg Config) string {
	t.Helper()
	_, sock := startServer(t, cfg)
	return sock
}

// startServer is startDaemon that also returns the daemon's server, for
// looking at its state from its loop (inLoop).
func startServer(t *testing.T, cfg Config) (*server, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "pld")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg.Socket = filepath.Join(dir, "s")
	s, _ := serveUntilStopped(t, cfg)
	return s, cfg.Socket
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// client is a raw protocol client.
type client struct {
	t  *testing.T
	nc net.Conn
	r  *proto.Reader
}

func dial(t *testing.T, sock string) *client {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, r: proto.NewReader(nc)}
}

func (c *client) send(m proto.Msg) {
	c.t.Helper()
	if err := proto.Write(c.nc, m); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) recv() proto.Msg {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	m, err := c.r.Read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

func (c *client) expect(typ string) proto.Msg {
	c.t.Helper()
	for {
		m := c.recv()
		if m.Type == proto.TWaiting && typ != proto.TWaiting {
			continue // status updates may come at any time
		}
		if m.Type != typ {
			c.t.Fatalf("got %+v, want %s", m, typ)
		}
		return m
	}
}

func (c *client) hello() proto.Msg {
	c.t.Helper()
	c.send(proto.Msg{Type: proto.THello, Version: proto.Version, Client: "test"})
	return c.expect(proto.THello)
}

func acquire(t *testing.T, sock string, m proto.Msg) *client {
	t.Helper()
	c := dial(t, sock)
	c.hello()
	m.Type = proto.TAcquire
	if len(m.Command) == 0 {
		m.Command = []string{"job", t.Name()}
	}
	c.send(m)
	return c
}

func list(t *testing.T, sock string) []proto.Entry {
	t.Helper()
	c := dial(t, sock)
	c.hello()
	c.send(proto.Msg{Type: proto.TList})
	var es []proto.Entry
	for {
		m := c.expect(proto.TList)
		es = append(es, m.Entries...)
		if !m.More {
			break
		}
	}
	c.nc.Close()
	return es
}

// states renders a listing as "ticket:state ..." for comparison.
func states(es []proto.Entry) string {
	var b []string
	for _, e := range es {
		b = append(b, fmt.Sprintf("%d:%s", e.Ticket, e.State))
	}
	return strings.Join(b, " ")
}

// waitList polls the listing until it matches; the daemon's state changes
// asynchronously after a client disconnects, so there is no event to await.
func waitList(t *testing.T, sock, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := states(list(t, sock))
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %q, want %q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHandshakeReportsDriverAndPolicy(t *testing.T) {
	sock := startDaemon(t, Config{Policy: lockq.Freeze})
	c := dial(t, sock)
	h := c.hello()
	if h.Version != proto.Version || h.Driver != "none" || h.Policy != "drain" || h.PID != os.Getpid() {
		t.Fatalf("hello %+v: want version 1, driver none, policy drain (none cannot freeze)", h)
	}
	if es := list(t, sock); len(es) != 0 {
		t.Fatalf("empty daemon lists %v", es)
	}
}

func TestExclusiveRequestsAreGrantedInArrivalOrderOverTheSocket(t *testing.T) {
	sock := startDaemon(t, Config{})
	a := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	if g := a.expect(proto.TGranted); g.Ticket != 1 || g.Job != "x-1" {
		t.Fatalf("granted %+v", g)
	}
	b := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	if q := b.expect(proto.TQueued); q.Position != 1 || len(q.Holders) != 1 || q.Holders[0].Mode != "exclusive" {
		t.Fatalf("queued %+v", q)
	}
	c := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	if q := c.expect(proto.TQueued); q.Position != 2 {
		t.Fatalf("queued %+v", q)
	}
	waitList(t, sock, "1:granted 2:waiting 3:waiting")
	a.nc.Close()
	b.expect(proto.TGranted)
	b.nc.Close()
	c.expect(proto.TGranted)
}

func TestClosingAWaitingConnectionCancelsItsRequest(t *testing.T) {
	sock := startDaemon(t, Config{})
	a := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	a.expect(proto.TGranted)
	b := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	b.expect(proto.TQueued)
	b.nc.Close()
	waitList(t, sock, "1:granted")
}

func TestNonblockAndTimeoutGiveUp(t *testing.T) {
	sock := startDaemon(t, Config{})
	a := acquire(t, sock, proto.Msg{Mode: "exclusive", Command: []string{"sleep", "1000"}})
	a.expect(proto.TGranted)
	b := acquire(t, sock, proto.Msg{Mode: "shared", Nonblock: true})
	if m := b.expect(proto.TBusy); len(m.Holders) != 1 || m.Holders[0].Command != "sleep 1000" {
		t.Fatalf("busy %+v", m)
	}
	c := acquire(t, sock, proto.Msg{Mode: "shared", TimeoutMS: 50})
	c.expect(proto.TQueued)
	c.expect(proto.TExpired)
	waitList(t, sock, "1:granted")
}

func TestPerUserWaitingLimit(t *testing.T) {
	sock := startDaemon(t, Config{MaxWaiting: 2})
	acquire(t, sock, proto.Msg{Mode: "exclusive"}).expect(proto.TGranted)
	acquire(t, sock, proto.Msg{Mode: "exclusive"}).expect(proto.TQueued)
	acquire(t, sock, proto.Msg{Mode: "exclusive"}).expect(proto.TQueued)
	if m := acquire(t, sock, proto.Msg{Mode: "exclusive"}).expect(proto.TError); m.Code != proto.CodeLimit {
		t.Fatalf("third waiter: %+v", m)
	}
	waitList(t, sock, "1:granted 2:waiting 3:waiting")
}

// Broken and hostile clients get an error or a closed connection; the daemon
// serves on and its queue does not change.
func TestBrokenClientsDoNotDisturbTheQueue(t *testing.T) {
	sock := startDaemon(t, Config{})
	holder := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	holder.expect(proto.TGranted)
	waiter := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	waiter.expect(proto.TQueued)

	cases := []struct {
		name  string
		send  []byte
		hello bool
		code  string // "" : just a close
	}{
		{"not json", []byte("hello there\n"), false, proto.CodeInvalid},
		{"no type", []byte("{}\n"), false, proto.CodeInvalid},
		{"unknown type", []byte(`{"type":"steal"}` + "\n"), true, proto.CodeInvalid},
		{"wrong version", []byte(`{"type":"hello","version":99}` + "\n"), false, proto.CodeVersion},
		{"acquire before hello", []byte(`{"type":"acquire","mode":"exclusive","command":["x"]}` + "\n"), false, proto.CodeInvalid},
		{"bad mode", []byte(`{"type":"acquire","mode":"grab","command":["x"]}` + "\n"), true, proto.CodeInvalid},
		{"bad resource", []byte(`{"type":"acquire","mode":"shared","resources":["../etc"],"command":["x"]}` + "\n"), true, proto.CodeInvalid},
		{"preemptible exclusive", []byte(`{"type":"acquire","mode":"exclusive","preemptible":true,"command":["x"]}` + "\n"), true, proto.CodeInvalid},
		{"place before grant", []byte(`{"type":"place","pid":1}` + "\n"), true, proto.CodeInvalid},
		{"oversized", append([]byte(`{"type":"hello","version":1,"client":"`), strings.Repeat("a", proto.MaxMessage)...), false, proto.CodeInvalid},
		// The daemon may answer it (invalid) before it sees the close, or not.
		{"truncated then closed", []byte(`{"type":"hel`), false, ""},
		{"silent", nil, false, proto.CodeInvalid},
		{"silent after hello", nil, true, proto.CodeInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, sock)
			if tc.hello {
				c.hello()
			}
			if tc.send != nil {
				c.nc.Write(tc.send)
			}
			if tc.name == "truncated then closed" {
				c.nc.(*net.UnixConn).CloseWrite()
			}
			c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			m, err := c.r.Read()
			switch {
			case tc.code == "" && err == nil && (m.Type != proto.TError || m.Code != proto.CodeInvalid):
				t.Fatalf("got %+v, want the connection closed (or an invalid error)", m)
			case tc.code == "" && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset"):
				t.Fatalf("got %v, want EOF", err)
			case tc.code != "" && (err != nil || m.Type != proto.TError || m.Code != tc.code):
				t.Fatalf("got %+v, %v; want error %s", m, err, tc.code)
			}
		})
	}
	waitList(t, sock, "1:granted 2:waiting")
	holder.nc.Close()
	waiter.expect(proto.TGranted)
}

func TestPlacingAPidThatIsNotTheClientsChildIsDenied(t *testing.T) {
	sock := startDaemon(t, Config{})
	c := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	c.expect(proto.TGranted)
	// pid 1 is not the client's child.
	c.send(proto.Msg{Type: proto.TPlace, PID: 1})
	if m := c.expect(proto.TError); m.Code != proto.CodeDenied {
		t.Fatalf("place pid 1: %+v", m)
	}
	waitList(t, sock, "1:granted")
	c.nc.Close()
	waitList(t, sock, "")
}

func TestCheckChild(t *testing.T) {
	cmd := exec.Command("sleep", "100")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	uid := uint32(os.Getuid())
	self, err := procStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if err := checkChild(cmd.Process.Pid, os.Getpid(), self, uid); err != nil {
		t.Fatalf("own child: %v", err)
	}
	if err := checkChild(os.Getpid(), os.Getpid(), self, uid); err != nil {
		t.Fatalf("the client itself (a job run in place): %v", err)
	}
	for _, tc := range []struct {
		pid, parent int
		start       uint64
		uid         uint32
	}{
		{cmd.Process.Pid, os.Getppid(), self, uid},    // someone else's child
		{cmd.Process.Pid, os.Getpid(), self, uid + 1}, // another user's
		{os.Getpid(), os.Getpid(), self + 1, uid},     // the client's pid, another process's now
		{os.Getpid(), os.Getpid(), 0, uid},            // the client's start unknown
		{os.Getpid(), os.Getpid(), self, uid + 1},     // the client, as another user
		{os.Getppid(), os.Getpid(), self, uid},        // not a child at all
		{1 << 30, os.Getpid(), self, uid},             // no such process
	} {
		if err := checkChild(tc.pid, tc.parent, tc.start, tc.uid); !errors.Is(err, ErrNotChild) {
			t.Errorf("checkChild(%d, %d, %d, %d) = %v, want ErrNotChild", tc.pid, tc.parent, tc.start, tc.uid, err)
		}
	}
	if _, err := parseStatus([]byte("Name:\tx\nPPid:\tabc\nUid:\t0\n")); err == nil {
		t.Error("bad PPid accepted")
	}
	if _, err := parseStatus([]byte("Name:\tx\n")); err == nil {
		t.Error("status without PPid accepted")
	}
}

func TestSecondDaemonOnTheSameSocketReportsRunning(t *testing.T) {
	sock := startDaemon(t, Config{})
	err := Run(context.Background(), Config{Socket: sock, Driver: "none", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !errors.Is(err, ErrRunning) {
		t.Fatalf("second daemon: %v, want ErrRunning", err)
	}
	dial(t, sock).hello() // the first one still serves
}

func TestIdleDaemonExits(t *testing.T) {
	dir, _ := os.MkdirTemp("", "pld")
	defer os.RemoveAll(dir)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Config{Socket: filepath.Join(dir, "s"), Driver: "none", IdleExit: 50 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("idle daemon did not exit")
	}
	if _, err := os.Stat(filepath.Join(dir, "s")); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// requireCgroupfs skips unless this host lets the daemon use cgroupfs.
func requireCgroupfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cgroupfs driver tests need root")
	}
	mount, err := cgroup.Mountpoint()
	if err != nil {
		t.Skipf("no cgroup2 mount: %v", err)
	}
	name := fmt.Sprintf("perflock-dtest-%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		jobs, _ := filepath.Glob(filepath.Join(mount, name, "*", "*-*"))
		for _, d := range append(jobs, filepath.Join(mount, name, "exclusive"), filepath.Join(mount, name, "shared"), filepath.Join(mount, name)) {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return name
}

// A shared preemptible job placed in its cgroup is frozen while an exclusive
// job holds, and thawed after.
func TestFreezePolicyFreezesSharedJobWhileExclusiveHolds(t *testing.T) {
	name := requireCgroupfs(t)
	sock := startDaemon(t, Config{Driver: "cgroupfs", CgroupName: name, Policy: lockq.Freeze})
	mount, _ := cgroup.Mountpoint()

	s := acquire(t, sock, proto.Msg{Mode: "shared", Preemptible: true})
	s.expect(proto.TGranted)
	child := exec.Command("sleep", "1000")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	s.send(proto.Msg{Type: proto.TPlace, PID: child.Process.Pid})
	where := s.expect(proto.TPlaced).Where
	if where != "/"+name+"/shared/s-1" {
		t.Fatalf("placed in %q", where)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", child.Process.Pid))
	if !strings.Contains(string(cg), where) {
		t.Fatalf("child's cgroups %q lack %s", cg, where)
	}

	x := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	x.expect(proto.TQueued)  // it waits for the freeze,
	x.expect(proto.TGranted) // granted only once the freeze is confirmed
	s.expect(proto.TFrozen)
	if ev := readFile(t, filepath.Join(mount, name, "shared", "cgroup.events")); !strings.Contains(ev, "frozen 1") {
		t.Fatalf("shared side not frozen when the exclusive job was granted: %q", ev)
	}
	waitList(t, sock, "1:frozen 2:granted")
	x.nc.Close()
	s.expect(proto.TThawed)
	if ev := readFile(t, filepath.Join(mount, name, "shared", "cgroup.events")); !strings.Contains(ev, "frozen 0") {
		t.Fatalf("shared side still frozen: %q", ev)
	}
	// The lease outlives the connection while the job runs.
	s.nc.Close()
	waitList(t, sock, "1:running")
	child.Process.Kill()
	child.Wait()
	waitList(t, sock, "")
	if _, err := os.Stat(filepath.Join(mount, name, "shared", "s-1")); !os.IsNotExist(err) {
		t.Fatalf("job cgroup left behind: %v", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A client that trickles its hello a byte at a time is cut off at the
// handshake deadline; others are served meanwhile.
func TestTricklingClientIsCutOffAndOthersServed(t *testing.T) {
	sock := startDaemon(t, Config{})
	slow := dial(t, sock)
	done := make(chan error, 1)
	go func() {
		hello := []byte(`{"type":"hello","version":1}` + "\n")
		for _, b := range hello {
			if _, err := slow.nc.Write([]byte{b}); err != nil {
				done <- err
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		done <- nil
	}()
	acquire(t, sock, proto.Msg{Mode: "exclusive"}).expect(proto.TGranted)
	slow.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if m, err := slow.r.Read(); err == nil && (m.Type != proto.TError || !strings.Contains(m.Message, "no hello or request within")) {
		t.Fatalf("the trickling client got %+v, want an error saying it was too slow", m)
	}
	<-done
}

// Connections beyond a user's limit are refused with a "limit" error; once
// some close, new ones are served.
func TestConnectionsBeyondTheLimitAreRefused(t *testing.T) {
	sock := startDaemon(t, Config{MaxConnsPerUser: 3})
	var open []*client
	for range 3 {
		c := dial(t, sock)
		c.hello()
		open = append(open, c)
	}
	extra := dial(t, sock)
	extra.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if m, err := extra.r.Read(); err != nil || m.Type != proto.TError || m.Code != proto.CodeLimit {
		t.Fatalf("fourth connection: %+v, %v; want a limit error", m, err)
	}
	open[0].nc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := dial(t, sock)
		c.send(proto.Msg{Type: proto.THello, Version: proto.Version})
		m := c.recv()
		if m.Type == proto.THello {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after a connection closed: %+v", m)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The daemon refuses to place the client's own child when it runs as
// another user.
func TestPlacingAChildOfAnotherUserIsDenied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a child as another user")
	}
	sock := startDaemon(t, Config{})
	c := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	c.expect(proto.TGranted)
	child := exec.Command("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "sleep", "100")
	if err := child.Start(); err != nil {
		t.Skipf("setpriv: %v", err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	// setpriv execs sleep in place: the pid is our child, running as nobody.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", child.Process.Pid))
		if st, err := parseStatus(b); err == nil && st.uid == 65534 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child never ran as nobody")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.send(proto.Msg{Type: proto.TPlace, PID: child.Process.Pid})
	if m := c.expect(proto.TError); m.Code != proto.CodeDenied || !strings.Contains(m.Message, "uid 65534") {
		t.Fatalf("place of another user's process: %+v", m)
	}
	waitList(t, sock, "1:granted")
}

// Rejoining needs the token the daemon gave for that ticket and user, and a
// ticket from before the restart.
func TestRejoinNeedsTheTicketsToken(t *testing.T) {
	st, err := loadRunState(t.TempDir(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	st.started = 10
	tok := st.token(7, 1000)
	for _, tc := range []struct {
		t     lockq.Ticket
		uid   uint32
		token string
		ok    bool
	}{
		{7, 1000, tok, true},
		{7, 1001, tok, false}, // another user
		{8, 1000, tok, false}, // another ticket
		{7, 1000, tok[:len(tok)-1], false},
		{11, 1000, st.token(11, 1000), false}, // not from before the restart
		{0, 1000, st.token(0, 1000), false},
	} {
		if got := st.canRejoin(tc.t, tc.uid, tc.token); got != tc.ok {
			t.Errorf("canRejoin(%d, %d, %q) = %v", tc.t, tc.uid, tc.token, got)
		}
	}
}

// The ticket mark on disk stays ahead of every ticket handed out, so a
// restarted daemon never repeats one.
func TestTicketMarkStaysAheadAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	st, err := loadRunState(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for last := lockq.Ticket(1); last < 3*ticketBlock; last++ {
		before := st.reserved
		if err := st.reserve(last); err != nil {
			t.Fatal(err)
		}
		if last%97 != 0 && st.reserved == before && last+1 != before {
			continue // check every 97th ticket and around each extension
		}
		// A crash now: what would a new daemon see? (It loads a copy: loading
		// writes a new mark.)
		again, err := loadRunState(copyState(t, dir), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if again.started <= last {
			t.Fatalf("after ticket %d the mark on disk is %d", last, again.started)
		}
		if again.waiters != -1 {
			t.Fatalf("a crash reads as %d waiters, want unknown (-1)", again.waiters)
		}
	}
	if err := st.stop(0); err != nil {
		t.Fatal(err)
	}
	if again, _ := loadRunState(copyState(t, dir), testLogger(t)); again.waiters != 0 {
		t.Fatalf("a clean stop with none waiting reads as %d", again.waiters)
	}
}

func copyState(t *testing.T, dir string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range []string{"tickets", "key"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// A long queue is listed in several messages, each within the protocol's
// bound, and whole.
func TestLongQueueIsListedWhole(t *testing.T) {
	sock := startDaemon(t, Config{MaxWaiting: 1000})
	long := strings.Repeat("x", proto.MaxArgBytes)
	cmd := []string{long, long, long, long}
	acquire(t, sock, proto.Msg{Mode: "exclusive", Command: cmd}).expect(proto.TGranted)
	for range 300 {
		acquire(t, sock, proto.Msg{Mode: "exclusive", Command: cmd}).expect(proto.TQueued)
	}
	c := dial(t, sock)
	c.hello()
	c.send(proto.Msg{Type: proto.TList})
	var n, msgs int
	for {
		m := c.expect(proto.TList)
		msgs++
		n += len(m.Entries)
		for _, e := range m.Entries {
			if len(strings.Join(e.Command, " ")) > listCommand {
				t.Fatalf("entry %d lists %d bytes of command", e.Ticket, len(strings.Join(e.Command, " ")))
			}
		}
		if !m.More {
			break
		}
	}
	if n != 301 || msgs < 2 {
		t.Fatalf("listed %d entries in %d messages, want 301 in several", n, msgs)
	}
}

// orderDriver is a none driver that reports adopted jobs in the order given
// and records freeze calls: how the daemon adopts must not depend on the
// order a driver lists jobs in.
type orderDriver struct {
	noneDriver
	found  []Adopted
	mu     sync.Mutex
	frozen []bool
}

func (d *orderDriver) CanFreeze() bool { return true }
func (d *orderDriver) SetSharedFrozen(_ context.Context, f bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.frozen = append(d.frozen, f)
	return nil
}
func (d *orderDriver) Adopt(context.Context) ([]Adopted, error) { return d.found, nil }
func (d *orderDriver) calls() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fmt.Sprint(d.frozen)
}

// A restarted daemon keeps the shared jobs frozen while an adopted
// exclusive one runs, whatever order its driver lists them in, and
// freezes them before it serves.
func TestAdoptionKeepsSharedJobsFrozenWhateverTheOrder(t *testing.T) {
	for _, order := range [][]Adopted{
		{{Ticket: 3, Shared: true, Placement: blockedPlacement{}}, {Ticket: 4, Placement: blockedPlacement{}}},
		{{Ticket: 4, Placement: blockedPlacement{}}, {Ticket: 3, Shared: true, Placement: blockedPlacement{}}},
	} {
		d := &orderDriver{found: order}
		sock := startDaemon(t, Config{drv: d, Policy: lockq.Freeze})
		if got := d.calls(); got != "[true]" {
			t.Errorf("adopting %v: freeze calls %s before serving, want [true]", order, got)
		}
		waitList(t, sock, "3:frozen 4:running")
		if got := d.calls(); got != "[true]" {
			t.Errorf("adopting %v: freeze calls %s, want [true] and nothing after", order, got)
		}
	}
}

// blockedPlacement is a place whose job never ends.
type blockedPlacement struct{ nonePlacement }

func (blockedPlacement) WaitEmpty(ctx context.Context) error     { <-ctx.Done(); return ctx.Err() }
func (blockedPlacement) Populated(context.Context) (bool, error) { return true, nil }

// The daemon never listens in a directory someone else could tamper with.
func TestSocketDirectoryMustBeSafe(t *testing.T) {
	base := t.TempDir()
	link := filepath.Join(base, "link")
	os.Mkdir(filepath.Join(base, "real"), 0o755)
	os.Symlink(filepath.Join(base, "real"), link)
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	sticky := filepath.Join(base, "sticky")
	os.Mkdir(sticky, 0o777)
	os.Chmod(sticky, 0o777|os.ModeSticky)
	for dir, ok := range map[string]bool{link: false, open: false, filepath.Join(base, "real"): true, sticky: true} {
		err := checkSocketDir(dir)
		if (err == nil) != ok {
			t.Errorf("checkSocketDir(%s) = %v, want ok=%v", dir, err, ok)
		}
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(base, "other")
		os.Mkdir(other, 0o755)
		os.Chown(other, 65534, 65534)
		if err := checkSocketDir(other); !errors.Is(err, ErrConfig) {
			t.Errorf("a directory of uid 65534: %v", err)
		}
	}
	err := Run(context.Background(), Config{Socket: filepath.Join(open, "s"), Driver: "none", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("Run in a world-writable directory: %v", err)
	}
}
