package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/proto"
)

// bench is one run: where the binaries are, the daemons it started, the
// results so far.
type bench struct {
	bin     string // perfrun, pls, wholock, perflockd
	self    string // this program, re-executed for helper modes
	dir     string // scratch: sockets, stamp files, lock files
	driver  string // cgroupfs, none, or systemd (the installed units)
	systemd bool   // the daemon is perflockd.service under systemd
	quick   bool   // fewer repetitions (a smoke run)
	cores   int
	iso     isoConfig // the isolation scenario's flags

	mu      sync.Mutex
	daemons map[daemonKey]*daemon
	current *daemon // systemd: the one configuration the service runs now
	hogSets int     // sets of hogs started so far (names their ready sockets)

	report *report
}

// daemonKey is a daemon's configuration: driver, policy, a tag for a daemon
// of a scenario's own, and the CPUs of --shield ("" for none).
type daemonKey struct{ driver, policy, tag, shield string }

// errRefused: perflockd exited before serving (an unknown flag, a
// configuration this machine cannot give). A refusal says why, in
// perflockd's words.
var errRefused = errors.New("perflockd refused to start")

// refusal is an errRefused with perflockd's reason.
type refusal struct{ reason string }

func (r *refusal) Error() string { return errRefused.Error() + ": " + r.reason }
func (r *refusal) Unwrap() error { return errRefused }

// refusalReason is what perflockd said last before it exited: the last
// line of its output that is not a hint to --help, without the program's
// name.
func refusalReason(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "Run '") {
			continue
		}
		l = strings.TrimPrefix(l, "perflockd: ")
		l = strings.TrimPrefix(l, "Error: ")
		if len(l) > 300 {
			l = l[:300] + "…"
		}
		return l
	}
	return "no reason given"
}

// daemon is one perflockd serving sock.
type daemon struct {
	key    daemonKey
	sock   string
	cgName string // cgroupfs subtree
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited (host daemons)
	log    *os.File
	since  time.Time
}

// progress prints one progress line to stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// pickDriver is cgroupfs when this process may use a cgroup2 tree, else none.
func pickDriver() string {
	if os.Geteuid() != 0 {
		return "none"
	}
	mount, err := cgroup.Mountpoint()
	if err != nil {
		return "none"
	}
	// Writable: try a scratch cgroup.
	d := filepath.Join(mount, fmt.Sprintf("perflock-bench-probe-%d", os.Getpid()))
	if err := os.Mkdir(d, 0o755); err != nil {
		return "none"
	}
	os.Remove(d)
	return "cgroupfs"
}

// daemon returns a perflockd for the driver and policy ("" driver: the run's
// own), starting it if needed. On the host every configuration has its own
// daemon, all running side by side; under systemd there is one service,
// reconfigured (and restarted) when a different configuration is asked for.
func (b *bench) daemon(ctx context.Context, driver, policy string) (*daemon, error) {
	return b.daemonFor(ctx, daemonKey{driver: driver, policy: policy})
}

// daemonTagged is daemon, with tag naming a daemon of its own (not shared
// with the scenarios that ask for no tag).
func (b *bench) daemonTagged(ctx context.Context, driver, policy, tag string) (*daemon, error) {
	return b.daemonFor(ctx, daemonKey{driver: driver, policy: policy, tag: tag})
}

// daemonFor returns a perflockd configured as key ("" driver: the run's
// own), starting it if needed. A daemon that exits before it serves is
// reported as a *refusal.
func (b *bench) daemonFor(ctx context.Context, key daemonKey) (*daemon, error) {
	if key.driver == "" {
		key.driver = b.driver
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.systemd {
		if b.current != nil && b.current.key == key {
			return b.current, nil
		}
		d, err := b.startSystemd(ctx, key)
		if err != nil {
			b.current = nil // the service runs (or failed with) another configuration now
			return nil, err
		}
		b.current = d
		return d, nil
	}
	if d := b.daemons[key]; d != nil {
		return d, nil
	}
	d, err := b.startHost(ctx, key)
	if err != nil {
		return nil, err
	}
	b.daemons[key] = d
	return d, nil
}

// startHost starts perflockd on a socket of its own in the scratch folder.
func (b *bench) startHost(ctx context.Context, key daemonKey) (*daemon, error) {
	name := key.driver + "-" + key.policy
	if key.tag != "" {
		name += "-" + key.tag
	}
	if key.shield != "" {
		name += "-shield"
	}
	// A folder each: perflockd keeps its state (tickets, waiting requests,
	// job records) beside its socket, and a daemon that found another's
	// there would take it for its own earlier run.
	sockDir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(sockDir, 0o755); err != nil {
		return nil, err
	}
	d := &daemon{key: key, sock: filepath.Join(sockDir, "perflock.sock"), since: time.Now()}
	args := []string{"--socket", d.sock, "--driver", key.driver, "--policy", key.policy,
		"--max-waiting", "20000", "--max-conns", "20010", "--max-conns-per-user", "20010", "--log-level", "info"}
	if key.driver == "cgroupfs" {
		d.cgName = fmt.Sprintf("perflock-bench-%d-%s", os.Getpid(), name)
		args = append(args, "--cgroup-name", d.cgName)
	}
	if key.shield != "" {
		args = append(args, "--shield", key.shield)
	}
	f, err := os.Create(filepath.Join(b.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	d.log = f
	// Not CommandContext: the daemon outlives the scenario that asked for it.
	cmd := exec.Command(filepath.Join(b.bin, "perflockd"), args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start perflockd: %w", err)
	}
	d.cmd = cmd
	d.exited = make(chan struct{})
	go func() { cmd.Wait(); close(d.exited) }()
	if err := waitServing(ctx, d.sock, 10*time.Second, d.exited); err != nil {
		if errors.Is(err, errRefused) {
			err = &refusal{reason: refusalReason(d.logText(ctx))}
		}
		d.stopHost()
		return nil, fmt.Errorf("perflockd %s: %w", name, err)
	}
	if why, ok := noShield(d.logText(ctx)); key.shield != "" && ok {
		// It serves, without the shield asked for: not the scenario.
		d.stopHost()
		return nil, fmt.Errorf("perflockd %s: %w", name, &refusal{reason: why})
	}
	return d, nil
}

// noShieldLine is what perflockd logs at start when --shield cannot work
// here, with why="…".
var noShieldLine = regexp.MustCompile(`no shield on this machine[^\n]*why="((?:[^"\\]|\\.)*)"`)

// noShield reports why a perflockd started with --shield runs without one,
// from its log.
func noShield(log string) (string, bool) {
	m := noShieldLine.FindStringSubmatch(log)
	if m == nil {
		return "", false
	}
	return "no shield: " + strings.ReplaceAll(m[1], `\"`, `"`), true
}

// startSystemd points perflockd.service at this configuration with a drop-in
// and restarts it behind its socket.
func (b *bench) startSystemd(ctx context.Context, key daemonKey) (*daemon, error) {
	const sock = "/run/perflock/perflock.sock"
	dropin := "/run/systemd/system/perflockd.service.d"
	if err := os.MkdirAll(dropin, 0o755); err != nil {
		return nil, err
	}
	exe, err := exec.LookPath("perflockd")
	if err != nil {
		exe = filepath.Join(b.bin, "perflockd")
	}
	shield := ""
	if key.shield != "" {
		shield = " --shield " + key.shield
	}
	conf := fmt.Sprintf("[Service]\nExecStart=\nExecStart=%s --driver %s --policy %s --max-waiting 20000 --max-conns 20010 --max-conns-per-user 20010%s\nLimitNOFILE=65536\n", exe, key.driver, key.policy, shield)
	if err := os.WriteFile(filepath.Join(dropin, "bench.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	// A configuration refused earlier (a --shield this guest cannot give)
	// leaves the service failed, perhaps at its start limit.
	exec.CommandContext(ctx, "systemctl", "reset-failed", "perflockd.service").Run()
	for _, args := range [][]string{
		{"stop", "perflockd.service"},
		{"daemon-reload"},
		{"restart", "perflockd.socket"},
	} {
		if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	d := &daemon{key: key, sock: sock, since: time.Now()}
	if err := waitServing(ctx, sock, 60*time.Second, nil); err != nil {
		if key.shield != "" {
			// The service's refusal is in its journal.
			return nil, &refusal{reason: refusalReason(d.logText(ctx))}
		}
		return nil, err
	}
	return d, nil
}

// waitServing waits until a hello on sock is answered. It fails with
// errRefused as soon as exited (when not nil) is closed.
func waitServing(ctx context.Context, sock string, limit time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(limit)
	for {
		_, err := hello(sock)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving %s after %v: %w", sock, limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errRefused
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hello connects to sock and returns the daemon's hello.
func hello(sock string) (proto.Msg, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return proto.Msg{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := proto.Write(c, proto.Msg{Type: proto.THello, Version: proto.Version, Client: "bench"}); err != nil {
		return proto.Msg{}, err
	}
	m, err := proto.NewReader(c).Read()
	if err != nil {
		return proto.Msg{}, err
	}
	if m.Type != proto.THello {
		return m, fmt.Errorf("daemon answered %q: %s", m.Type, m.Message)
	}
	return m, nil
}

// pid is the daemon's process id, from its hello.
func (d *daemon) pid() (int, error) {
	m, err := hello(d.sock)
	if err != nil {
		return 0, err
	}
	return m.PID, nil
}

// logText is what the daemon has logged since it started.
func (d *daemon) logText(ctx context.Context) string {
	if d.log != nil {
		b, _ := os.ReadFile(d.log.Name())
		return string(b)
	}
	out, _ := exec.CommandContext(ctx, "journalctl", "-u", "perflockd.service", "-o", "cat", "--no-pager",
		"--since", "@"+strconv.FormatInt(d.since.Unix(), 10)).Output()
	return string(out)
}

// stopHost stops a daemon this run started and removes its cgroups.
func (d *daemon) stopHost() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	if d.log != nil {
		d.log.Close()
	}
	removeCgroups(d.cgName)
}

// removeCgroups kills what is left in a daemon's cgroup subtree and removes it.
func removeCgroups(name string) {
	if name == "" {
		return
	}
	if mount, err := cgroup.Mountpoint(); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := cgroup.RemoveTree(ctx, filepath.Join(mount, name)); err != nil {
			progress("leaving cgroups behind: %v", err)
		}
	}
}

// close stops every daemon this run started; under systemd it removes the
// drop-in and restarts the service as installed.
func (b *bench) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range b.daemons {
		d.stopHost()
	}
	if b.systemd && b.current != nil {
		os.Remove("/run/systemd/system/perflockd.service.d/bench.conf")
		exec.Command("systemctl", "stop", "perflockd.service").Run()
		exec.Command("systemctl", "daemon-reload").Run()
	}
}

// cmd builds a command whose binary is one of perflock's (perfrun, pls,
// wholock) or anything on PATH.
func (b *bench) cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	path := name
	switch name {
	case "perfrun", "pls", "wholock", "perflockd":
		path = filepath.Join(b.bin, name)
	}
	c := exec.CommandContext(ctx, path, args...)
	c.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(runtime.NumCPU()))
	return c
}

// timed runs c to completion and returns its wall time, from just before
// the fork to just after the wait.
func timed(c *exec.Cmd) (time.Duration, error) {
	var stderr bytes.Buffer
	if c.Stderr == nil {
		c.Stderr = &stderr
	}
	t0 := time.Now()
	err := c.Run()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("%s: %w: %s", strings.Join(c.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return d, nil
}

// machine describes where the run happens, for the page.
type machine struct {
	Cores                            int
	Model, Kernel, Date, Commit, GoV string
	Cache, Memory                    string // the largest CPU cache; total memory
	VM                               bool   // the CPU flags say hypervisor
	Driver, Note                     string
}

// buildCommit is the commit the bench was built from, for a binary that
// runs away from its repository (make bench-static sets it).
var buildCommit string

func describeMachine(ctx context.Context, driver string) machine {
	m := machine{Cores: runtime.NumCPU(), Driver: driver, Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), GoV: runtime.Version()}
	if out, err := exec.CommandContext(ctx, "nproc").Output(); err == nil {
		m.Cores, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			k, v, ok := strings.Cut(s.Text(), ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				if m.Model == "" {
					m.Model = strings.TrimSpace(v)
				}
			case "flags":
				m.VM = m.VM || slices.Contains(strings.Fields(v), "hypervisor")
			}
		}
		f.Close()
	}
	if mib, level := cacheInfo(); mib > 0 {
		m.Cache = fmt.Sprintf("L%d, %d MiB", level, mib)
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.Memory = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m.Kernel = cstr(u.Release[:])
	}
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		// docs/ is left out: it holds this program's own earlier output.
		if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
			m.Commit += " (with uncommitted changes)"
		}
	}
	if m.Commit == "" {
		m.Commit = os.Getenv("PERFLOCK_BENCH_COMMIT")
	}
	if m.Commit == "" {
		m.Commit = buildCommit
	}
	return m
}

func cstr(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// rssKiB reads VmRSS (or another field such as VmHWM) of pid in KiB.
func rssKiB(pid int, field string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// fdLimit reads the "Max open files" soft limit of pid.
func fdLimit(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(line)
			if len(f) >= 5 {
				return f[3] + " (hard " + f[4] + ")"
			}
		}
	}
	return "unknown"
}
