package e2e

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
)

// The soak: many concurrent clients making random exclusive, shared and
// group requests on random sets of resources, with timeouts, nonblocking
// tries, cancels and abrupt disconnects, beside real perfrun and pls
// processes (some killed with SIGKILL while their job runs). An audit built
// only from timestamps the jobs write themselves checks that incompatible
// jobs never overlapped, that no pls job ran while an exclusive job held the
// machine, that every request ended one way or another, and that nothing is
// left waiting.
//
// PERFLOCK_SOAK sets the duration (default 10s, `make soak` runs 60s) and
// PERFLOCK_SOAK_CLIENTS the number of protocol clients (default 1000).

const envBeat = "PERFLOCK_E2E_BEATS" // agent: append a monotonic timestamp here every millisecond

// monoNow is CLOCK_MONOTONIC in nanoseconds: comparable across processes.
func monoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// span is one job's hold, as the job itself saw it.
type span struct {
	who        string
	mode       lockq.Mode
	res        []string
	start, end int64
	beats      []int64 // pls jobs: when they were running (not frozen)
}

type soakStats struct {
	requests, granted, busy, expired, cancelled, dropped, errors atomic.Int64
	procJobs, procKills                                          atomic.Int64

	mu    sync.Mutex
	first []string // the first few unexpected answers
}

func (st *soakStats) fail(who, what string, err error) {
	st.errors.Add(1)
	st.mu.Lock()
	if len(st.first) < 5 {
		st.first = append(st.first, fmt.Sprintf("%s: %s: %v", who, what, err))
	}
	st.mu.Unlock()
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

func TestSoakManyClientsNoOverlapNoLostGrants(t *testing.T) {
	duration := envDuration("PERFLOCK_SOAK", 10*time.Second)
	clients := 1000
	if n, err := strconv.Atoi(os.Getenv("PERFLOCK_SOAK_CLIENTS")); err == nil && n > 0 {
		clients = n
	}
	e := newEnvWith(t, drivers()[0], "freeze", "--log-level", soakLogLevel(), "--max-waiting", strconv.Itoa(2*clients),
		"--max-conns-per-user", strconv.Itoa(2*clients+100), "--max-conns", strconv.Itoa(2*clients+100))

	var (
		stats soakStats
		mu    sync.Mutex
		spans []span
		wg    sync.WaitGroup
	)
	stop := time.Now().Add(duration)
	record := func(s span) {
		mu.Lock()
		spans = append(spans, s)
		mu.Unlock()
	}
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for n := 0; time.Now().Before(stop); n++ {
				soakRequest(e.sock, fmt.Sprintf("c%d.%d", i, n), rng, &stats, record)
			}
		}()
	}
	// Real processes: perfrun and pls jobs that write their own timestamps;
	// some perfrun clients are killed with SIGKILL while their job runs.
	beatsDir := filepath.Join(e.dir, "beats")
	os.Mkdir(beatsDir, 0o755)
	var procs []string
	var pmu sync.Mutex
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(1000+w), 7))
			for n := 0; time.Now().Before(stop); n++ {
				name := fmt.Sprintf("p%d.%d", w, n)
				prog := "perfrun"
				if rng.IntN(2) == 0 {
					prog = "pls"
				}
				beat := filepath.Join(beatsDir, name)
				hold := time.Duration(5+rng.IntN(40)) * time.Millisecond
				// A client to be killed while its job runs stays the job's
				// parent (--key needs one, for the job's status); the others
				// run their jobs in place.
				kill := prog == "perfrun" && rng.IntN(3) == 0
				flags := []string{"-q"}
				if kill {
					flags = append(flags, "--key", name)
				}
				p := e.job(prog, name, flags, envHold+"="+hold.String(), envBeat+"="+beat)
				pmu.Lock()
				procs = append(procs, prog+" "+name)
				pmu.Unlock()
				stats.procJobs.Add(1)
				if kill {
					e.waitEvent("start " + name)
					p.cmd.Process.Signal(syscall.SIGKILL)
					stats.procKills.Add(1)
				}
				<-p.done
				e.waitEvent("end " + name) // the job runs to its end, killed client or not
			}
		}()
	}
	wg.Wait()
	// Nothing may be left: every lease ended, nobody waits.
	e.waitQueue("")

	for _, pn := range procs {
		prog, name, _ := strings.Cut(pn, " ")
		s, err := readBeats(filepath.Join(beatsDir, name))
		if err != nil {
			t.Fatalf("job %s: %v", name, err)
		}
		s.who = name
		s.res = []string{lockq.Machine}
		if prog == "perfrun" {
			s.mode = lockq.ExclusiveMode()
			s.beats = nil // only a pls job's beats matter: it may be frozen
		} else {
			s.mode = lockq.SharedMode()
		}
		spans = append(spans, s)
	}
	overlaps := audit(spans)
	for i, o := range overlaps {
		if i == 10 {
			t.Errorf("... and %d more", len(overlaps)-10)
			break
		}
		t.Error(o)
	}
	t.Logf("soak %v: %d protocol clients made %d requests: %d granted, %d busy (-n), %d timed out, %d cancelled by their client, %d dropped while holding; "+
		"%d perfrun/pls processes, %d perfrun clients killed with SIGKILL while their job ran; %d holds audited, %d overlaps; %d unexpected answers",
		duration, clients, stats.requests.Load(), stats.granted.Load(), stats.busy.Load(), stats.expired.Load(), stats.cancelled.Load(), stats.dropped.Load(),
		stats.procJobs.Load(), stats.procKills.Load(), len(spans), len(overlaps), stats.errors.Load())
	if stats.errors.Load() > 0 {
		t.Errorf("%d requests ended in an unexpected way, first: %q", stats.errors.Load(), stats.first)
	}
	if stats.granted.Load() == 0 {
		t.Error("nothing was granted")
	}
}

// soakRequest makes one random request as a protocol client and records the
// hold if granted.
func soakRequest(sock, who string, rng *rand.Rand, st *soakStats, record func(span)) {
	st.requests.Add(1)
	nc, err := net.Dial("unix", sock)
	if err != nil {
		st.fail(who, "dial", err)
		return
	}
	defer nc.Close()
	r := proto.NewReader(nc)
	nc.SetDeadline(time.Now().Add(2 * time.Minute)) // a stuck waiter fails the test, not hangs it
	if err := proto.Write(nc, proto.Msg{Type: proto.THello, Version: proto.Version, Client: "soak"}); err != nil {
		st.fail(who, "send hello", err)
		return
	}
	if m, err := r.Read(); err != nil || m.Type != proto.THello {
		st.fail(who, "hello "+m.Type+" "+m.Message, err)
		return
	}
	var mode lockq.Mode
	switch k := rng.IntN(10); {
	case k < 3:
		mode = lockq.ExclusiveMode()
	case k < 8:
		mode = lockq.SharedMode()
	default:
		mode = lockq.GroupMode(uint32(1 + rng.IntN(2)))
	}
	res := []string{"cpu", "net", "disk"}
	rng.Shuffle(len(res), func(i, j int) { res[i], res[j] = res[j], res[i] })
	res = res[:1+rng.IntN(3)]
	req := proto.Msg{Type: proto.TAcquire, Mode: mode.String(), Resources: res, Command: []string{"soak", who}}
	switch rng.IntN(10) {
	case 0:
		req.Nonblock = true
	case 1, 2:
		req.TimeoutMS = int64(1 + rng.IntN(30))
	}
	cancelAfter := time.Duration(0)
	if rng.IntN(10) == 0 {
		cancelAfter = time.Duration(1+rng.IntN(20)) * time.Millisecond
	}
	if err := proto.Write(nc, req); err != nil {
		st.fail(who, "send acquire", err)
		return
	}
	if cancelAfter > 0 {
		nc.SetReadDeadline(time.Now().Add(cancelAfter))
	}
	var got []string
	for {
		m, err := r.Read()
		if err == nil {
			got = append(got, m.Type)
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() && cancelAfter > 0 {
				st.cancelled.Add(1) // gave up waiting: close
				return
			}
			st.fail(who, fmt.Sprintf("read (request %+v, cancel after %v, got %v)", req, cancelAfter, got), err)
			return
		}
		switch m.Type {
		case proto.TQueued, proto.TWaiting:
			continue
		case proto.TBusy:
			st.busy.Add(1)
			return
		case proto.TExpired:
			st.expired.Add(1)
			return
		case proto.TGranted:
			s := span{who: who, mode: mode, res: res, start: monoNow()}
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
			s.end = monoNow()
			record(s)
			st.granted.Add(1)
			if rng.IntN(10) == 0 {
				st.dropped.Add(1) // vanish without a word, like a killed client
			}
			return
		default:
			st.fail(who, m.Type+" "+m.Code+" "+m.Message, nil)
			return
		}
	}
}

// readBeats reads an agent's timestamps: "start T", "beat T"..., "end T".
func readBeats(path string) (span, error) {
	f, err := os.Open(path)
	if err != nil {
		return span{}, err
	}
	defer f.Close()
	var s span
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		kind, v, _ := strings.Cut(sc.Text(), " ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch kind {
		case "start":
			s.start = n
		case "beat":
			s.beats = append(s.beats, n)
		case "end":
			s.end = n
		}
	}
	if s.start == 0 || s.end == 0 {
		return s, fmt.Errorf("%s: no start or end timestamp", path)
	}
	return s, nil
}

// audit finds incompatible holds that overlapped on a resource. A shared
// pls job (it has beats) only counts as holding when it beat: frozen, it
// does not run.
func audit(spans []span) []string {
	var out []string
	for _, r := range []string{"cpu", "net", "disk"} {
		var on []span
		for _, s := range spans {
			if slices.Contains(s.res, r) {
				on = append(on, s)
			}
		}
		sort.Slice(on, func(i, j int) bool { return on[i].start < on[j].start })
		var active []span
		for _, s := range on {
			kept := active[:0]
			for _, a := range active {
				if a.end > s.start {
					kept = append(kept, a)
				}
			}
			active = kept
			for _, a := range active {
				if a.mode.Compatible(s.mode) {
					continue
				}
				if bad := overlap(a, s); bad != "" {
					out = append(out, fmt.Sprintf("on %s: %s (%v) and %s (%v) %s", r, a.who, a.mode, s.who, s.mode, bad))
				}
			}
			active = append(active, s)
		}
	}
	return out
}

func overlap(a, b span) string {
	if a.beats != nil && b.mode.Kind != lockq.Shared || b.beats != nil && a.mode.Kind != lockq.Shared {
		// A pls job beside an exclusive or group one: it must not have run.
		p, x := a, b
		if b.beats != nil {
			p, x = b, a
		}
		for _, t := range p.beats {
			if t > x.start && t < x.end {
				return fmt.Sprintf("ran %.3f ms into the other's hold", float64(t-x.start)/1e6)
			}
		}
		return ""
	}
	return fmt.Sprintf("overlapped by %.3f ms", float64(min(a.end, b.end)-max(a.start, b.start))/1e6)
}

func soakLogLevel() string {
	if l := os.Getenv("PERFLOCK_SOAK_LOG"); l != "" {
		return l
	}
	return "warn"
}
