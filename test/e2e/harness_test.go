// Package e2e runs perflock's real commands end to end: a real perflockd on a
// real socket, real perfrun, pls and wholock processes, real cgroups where the
// host allows (root with a writable cgroup2 tree), real jobs.
//
// Jobs are this test binary re-executed as an "agent": it tells the test it
// has started, over a socket of the test's own, then waits to be told to exit.
// Tests therefore wait for events, not for time to pass.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/proto"
	"github.com/perflock/perflock/runner"
)

// Environment of an agent job.
const (
	envAgent = "PERFLOCK_E2E_AGENT" // the test's agent socket
	envName  = "PERFLOCK_E2E_NAME"  // the job's name
	envCount = "PERFLOCK_E2E_COUNT" // file to keep incrementing a counter in
	envHold  = "PERFLOCK_E2E_HOLD"  // exit by itself after this long
	envBurn  = "PERFLOCK_E2E_BURN"  // burn this much CPU, then report "burned NAME"; "forever": until told to exit
)

var binDir string // perfrun, pls, wholock, perflockd

// systemdTier: this run is the systemd tier, in a guest with systemd as PID 1
// and the commands on PATH (test/vm/run); only the TestSystemd tests run.
var systemdTier = os.Getenv("PERFLOCK_TEST_SYSTEMD") == "1"

func TestMain(m *testing.M) {
	if os.Getenv(envAgent) != "" {
		agentMain()
		return
	}
	if systemdTier {
		p, err := exec.LookPath("perfrun")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: the systemd tier needs the commands on PATH:", err)
			os.Exit(1)
		}
		binDir = filepath.Dir(p)
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "perflock-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/perflock/perflock/cmd/...")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the commands failed:", err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // other users run the commands too
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agentMain is a job: report "start NAME PID", optionally count, exit when
// told ("exit N") or after envHold.
func agentMain() {
	name := os.Getenv(envName)
	c, err := net.Dial("unix", os.Getenv(envAgent))
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(99)
	}
	if f := os.Getenv(envCount); f != "" {
		go func() {
			for n := 1; ; n++ {
				os.WriteFile(f+".tmp", []byte(strconv.Itoa(n)), 0o644)
				os.Rename(f+".tmp", f)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	var beats *os.File
	if f := os.Getenv(envBeat); f != "" {
		var err error
		if beats, err = os.OpenFile(f, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			os.Exit(97)
		}
		fmt.Fprintf(beats, "start %d\n", monoNow())
		go func() {
			for {
				fmt.Fprintf(beats, "beat %d\n", monoNow())
				time.Sleep(time.Millisecond)
			}
		}()
	}
	fmt.Fprintf(c, "start %s %d\n", name, os.Getpid())
	if b := os.Getenv(envBurn); b != "" {
		burnAndReport(c, name, b)
	}
	if d, err := time.ParseDuration(os.Getenv(envHold)); err == nil {
		time.Sleep(d)
		if beats != nil {
			fmt.Fprintf(beats, "end %d\n", monoNow())
		}
		fmt.Fprintf(c, "end %s\n", name)
		os.Exit(0)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		os.Exit(98) // the test is gone
	}
	var code int
	fmt.Sscanf(line, "exit %d", &code)
	os.Exit(code)
}

// env is one daemon with its agents.
type env struct {
	t      *testing.T
	dir    string
	sock   string
	cgName string // cgroupfs subtree, "" for the none driver
	daemon *exec.Cmd
	dargs  []string // perflockd's arguments
	dlog   *syncBuffer

	mu     sync.Mutex
	agents map[string]net.Conn
	events []string // "start A", "end A", "exit A", in order
	notify chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cgroupfsAvailable: this host lets a root daemon use cgroupfs.
func cgroupfsAvailable() bool {
	if os.Geteuid() != 0 {
		return false
	}
	_, err := cgroup.Mountpoint()
	return err == nil
}

// drivers is what the tests can run on here.
func drivers() []string {
	if cgroupfsAvailable() {
		return []string{"cgroupfs", "none"}
	}
	return []string{"none"}
}

func newEnv(t *testing.T, driver, policy string) *env {
	t.Helper()
	if systemdTier {
		t.Skip("host-tier test: the systemd tier runs only the TestSystemd tests")
	}
	dir, err := os.MkdirTemp("", "ple")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, sock: filepath.Join(dir, "perflock.sock"), agents: map[string]net.Conn{}, notify: make(chan struct{}, 1)}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.listenAgents()
	if driver != "" {
		e.startDaemon(driver, policy)
	}
	return e
}

// newEnvWith is newEnv with more perflockd flags.
func newEnvWith(t *testing.T, driver, policy string, daemonFlags ...string) *env {
	t.Helper()
	e := newEnv(t, "", "")
	e.startDaemon(driver, policy, daemonFlags...)
	return e
}

func (e *env) startDaemon(driver, policy string, extra ...string) {
	t := e.t
	e.dargs = []string{"--socket", e.sock, "--driver", driver, "--policy", policy, "--log-level", "debug"}
	e.dargs = append(e.dargs, extra...)
	if driver == "cgroupfs" {
		e.cgName = fmt.Sprintf("perflock-e2e-%d-%d", os.Getpid(), time.Now().UnixNano())
		e.dargs = append(e.dargs, "--cgroup-name", e.cgName)
	}
	e.dlog = &syncBuffer{}
	e.runDaemon()
	t.Cleanup(func() {
		e.daemon.Process.Signal(syscall.SIGTERM)
		e.daemon.Wait()
		if t.Failed() {
			t.Logf("perflockd log:\n%s", e.dlog.String())
		}
		e.removeCgroups()
	})
}

// runDaemon starts perflockd with e.dargs and waits until it serves.
func (e *env) runDaemon() {
	t := e.t
	d := exec.Command(filepath.Join(binDir, "perflockd"), e.dargs...)
	d.Stderr = e.dlog
	d.Stdout = e.dlog
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	e.daemon = d
	e.waitFor("the daemon to serve", func() bool {
		c, err := net.Dial("unix", e.sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// restartDaemon kills perflockd with SIGKILL and starts it again, as
// systemd's Restart= would.
func (e *env) restartDaemon() {
	e.daemon.Process.Signal(syscall.SIGKILL)
	e.daemon.Wait()
	fmt.Fprintf(e.dlog, "--- perflockd killed with SIGKILL and restarted ---\n")
	e.runDaemon()
}

// removeCgroups kills what is left in the daemon's tree and removes it.
func (e *env) removeCgroups() {
	if e.cgName == "" {
		return
	}
	mount, _ := cgroup.Mountpoint()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cgroup.RemoveTree(ctx, filepath.Join(mount, e.cgName)); err != nil {
		e.t.Logf("removing the daemon's cgroups: %v", err)
	}
}

func (e *env) listenAgents() {
	ln, err := net.Listen("unix", filepath.Join(e.dir, "agents"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ln.Close()
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, c := range e.agents {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					f := strings.Fields(line)
					if len(f) < 2 {
						continue
					}
					e.mu.Lock()
					if f[0] == "start" {
						e.agents[f[1]] = c
					}
					e.events = append(e.events, f[0]+" "+f[1])
					e.mu.Unlock()
					select {
					case e.notify <- struct{}{}:
					default:
					}
				}
			}()
		}
	}()
}

// proc is a perfrun, pls or wholock process.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	code   int
}

// job starts `prog [flags] -- <agent>` for a job called name. extra is
// environment for the agent.
func (e *env) job(prog, name string, flags []string, extra ...string) *proc {
	self, err := os.Executable()
	if err != nil {
		e.t.Fatal(err)
	}
	args := append([]string{"--socket", e.sock}, flags...)
	args = append(args, "--", self, "-test.run=^$", name)
	return e.start(prog, args, append([]string{envAgent + "=" + filepath.Join(e.dir, "agents"), envName + "=" + name}, extra...)...)
}

// jobAs is job run as another user, through setpriv(1). The agent is a copy
// of this test binary that the other user may run.
func (e *env) jobAs(user, prog, name string, flags []string, extra ...string) *proc {
	self := e.sharedAgent()
	args := []string{"--reuid", user, "--regid", user, "--init-groups", "--", filepath.Join(binDir, prog), "--socket", e.sock}
	args = append(args, flags...)
	args = append(args, "--", self, "-test.run=^$", name)
	return e.startPath("setpriv", args, append([]string{envAgent + "=" + filepath.Join(e.dir, "agents"), envName + "=" + name}, extra...)...)
}

func (e *env) start(prog string, args []string, extraEnv ...string) *proc {
	e.t.Helper()
	return e.startPath(filepath.Join(binDir, prog), args, extraEnv...)
}

func (e *env) startPath(path string, args []string, extraEnv ...string) *proc {
	e.t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	p := &proc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	// A job may outlive its client (kill -9) and keep the stderr pipe open:
	// do not wait for it once the client is gone.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		p.code = exitCode(err)
		close(p.done)
	}()
	e.t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p
}

// exitCode is the exit status a shell would report: the command's own, or
// 128+N for death by signal N; -1 when it did not run.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			return runner.ExitStatus(ws)
		}
		return ee.ExitCode()
	}
	return -1
}

// exit waits for p and returns its exit code.
func (e *env) exit(p *proc) int {
	e.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(60 * time.Second):
		e.t.Fatalf("%v did not exit; stderr:\n%s", p.cmd.Args, p.stderr.String())
		return -1
	}
}

// started waits until job name reports it has started.
func (e *env) started(name string) {
	e.t.Helper()
	e.waitEvent("start " + name)
}

func (e *env) waitEvent(ev string) {
	e.t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		e.mu.Lock()
		for _, x := range e.events {
			if x == ev {
				e.mu.Unlock()
				return
			}
		}
		e.mu.Unlock()
		select {
		case <-e.notify:
		case <-deadline:
			e.t.Fatalf("no %q; events so far %v", ev, e.eventList())
		}
	}
}

func (e *env) eventList() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.events...)
}

func (e *env) hasEvent(ev string) bool {
	for _, x := range e.eventList() {
		if x == ev {
			return true
		}
	}
	return false
}

// sharedAgent returns a world-executable copy of this test binary.
func (e *env) sharedAgent() string {
	self, err := os.Executable()
	if err != nil {
		e.t.Fatal(err)
	}
	if systemdTier {
		return self // already world-readable there
	}
	dst := filepath.Join(e.dir, "agent")
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	b, err := os.ReadFile(self)
	if err == nil {
		err = os.WriteFile(dst, b, 0o755)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return dst
}

// finish tells job name to exit with code.
func (e *env) finish(name string, code int) {
	e.t.Helper()
	e.mu.Lock()
	c := e.agents[name]
	e.events = append(e.events, "exit "+name)
	e.mu.Unlock()
	if c == nil {
		e.t.Fatalf("finish %s: it never started", name)
	}
	fmt.Fprintf(c, "exit %d\n", code)
}

// before reports whether event a happened before event b.
func (e *env) before(a, b string) bool {
	ia, ib := -1, -1
	for i, x := range e.eventList() {
		if x == a && ia < 0 {
			ia = i
		}
		if x == b && ib < 0 {
			ib = i
		}
	}
	return ia >= 0 && ib >= 0 && ia < ib
}

// list runs wholock --json.
func (e *env) list() []proto.Entry {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "wholock"), "--socket", e.sock, "--json").Output()
	if err != nil {
		e.t.Fatalf("wholock --json: %v (within a minute: %v)", err, ctx.Err() == nil)
	}
	var es []proto.Entry
	if err := json.Unmarshal(out, &es); err != nil {
		e.t.Fatalf("wholock --json output %q: %v", out, err)
	}
	return es
}

// queue renders the listing as "NAME:state ...", naming each entry by the
// last word of its command (jobs started by job() end with their name).
func (e *env) queue() string {
	var b []string
	for _, x := range e.list() {
		n := "?"
		if len(x.Command) > 0 {
			n = x.Command[len(x.Command)-1]
		}
		b = append(b, n+":"+x.State)
	}
	return strings.Join(b, " ")
}

// waitQueue polls wholock until the queue reads want. The queue changes
// when the daemon handles events this test cannot observe directly (a
// client's death), so polling with a deadline is the honest wait here.
func (e *env) waitQueue(want string) {
	e.t.Helper()
	deadline := time.Now().Add(settleTime)
	for {
		got := e.queue()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("queue %q, want %q; events %v", got, want, e.eventList())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settleTime bounds how long a test waits for the daemon to catch up with an
// event: generous, since the systemd tier runs under software emulation.
const settleTime = 60 * time.Second

// eventually calls f every 20 ms until it reports ok, for at most within,
// and returns the value it reported last; past within it fails the test,
// naming what it waited for and that last value. It is the way to read
// state the daemon changes after an event the test sees first (a client's
// exit is over before the daemon has heard of it): the status text,
// listings, metrics, unit properties, cgroup files, the daemon's files.
func eventually(t testing.TB, within time.Duration, what string, f func() (string, bool)) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v, ok := f()
		if ok {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last seen: %q", within, what, v)
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settleTime)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			e.t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
