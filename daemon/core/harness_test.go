package core

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/perflock/perflock/lockq"
)

// harness steps a Core and checks its effects as strings such as
// "c1:granted place(x-1)": a reply to connection 1, then a placement. Logs
// and metrics are left out (logs are kept in logs); a reply that closes
// the connection ends with "!".
type harness struct {
	t     *testing.T
	c     *Core
	now   Time
	names map[lockq.Ticket]string
	logs  []Log
}

const t0 = Time(1_700_000_000 * Second)

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.MaxWaiting == 0 {
		cfg.MaxWaiting = 128
	}
	return &harness{t: t, c: New(cfg), now: t0, names: map[lockq.Ticket]string{}}
}

// freezing is a harness whose driver can freeze, started with nothing to
// adopt and the shared side thawed.
func freezing(t *testing.T, cfg Config) *harness {
	t.Helper()
	cfg.CanFreeze = true
	h := newHarness(t, cfg)
	h.step(Adopt{Now: h.now}, "thaw")
	h.step(FreezerDone{Now: h.now}, "")
	return h
}

// step steps e and checks its effects against want.
func (h *harness) step(e Event, want string) {
	h.t.Helper()
	h.learnNames()
	effs := h.c.Step(e)
	h.learnNames()
	if got := h.show(effs); got != want {
		h.t.Fatalf("after %T %+v:\n got effects %q\nwant effects %q", e, e, got, want)
	}
	h.check()
}

func (h *harness) learnNames() {
	for t, j := range h.c.jobs {
		h.names[t] = j.name
	}
}

func (h *harness) name(t lockq.Ticket) string {
	if n, ok := h.names[t]; ok {
		return n
	}
	return "#" + strconv.FormatUint(uint64(t), 10)
}

var sayNames = map[ReplyKind]string{
	SayQueued: "queued", SayWaiting: "waiting", SayGranted: "granted", SayPlaced: "placed", SayBusy: "busy",
	SayExpired: "expired", SaySkipped: "skipped", SayFrozen: "frozen", SayThawed: "thawed",
	SayCancelled: "cancelled", SayError: "error",
}

func (h *harness) show(effs []Effect) string {
	var out []string
	for _, e := range effs {
		var s string
		switch e := e.(type) {
		case Reply:
			s = fmt.Sprintf("c%d:%s", e.Conn, sayNames[e.Kind])
			switch e.Kind {
			case SayQueued, SayWaiting:
				s += "@" + strconv.Itoa(e.Position)
			case SayError:
				s += "(" + e.Text + ")"
			}
			if e.Last {
				s += "!"
			}
		case SetFrozen:
			s = map[bool]string{true: "freeze", false: "thaw"}[e.Frozen]
		case PinSet:
			s = "pin(" + e.Mode + ")"
		case PinRestore:
			s = "unpin"
		case SetShield:
			s = map[bool]string{true: "shield(on)", false: "shield(off)"}[e.On]
		case PlaceJob:
			s = "place(" + e.Job.Name + ")"
			if e.Job.Bind != "" {
				s = "bind(" + e.Job.Name + "," + e.Job.Bind + ")"
			}
		case SetBusy:
			s = "idle"
			if e.Busy {
				s = "busy(" + e.Reason + ")"
			}
		case WatchEmpty:
			s = "watch(" + h.name(e.Ticket) + ")"
		case StopJob:
			s = "stop(" + h.name(e.Ticket) + ")"
		case EndLease:
			s = "end(" + h.name(e.Ticket) + ")"
		case SaveRecord:
			s = "save(" + h.name(e.Ticket) + ")"
		case DropRecord:
			s = "drop(" + h.name(e.Ticket) + ")"
		case Completed:
			s = "completed(" + e.Key + ")"
		case SendReport:
			s = fmt.Sprintf("report(%s,frozen=%d)", e.Job, e.FrozenJobs)
			if e.Shielded {
				s = strings.TrimSuffix(s, ")") + ",shielded)"
			} else if e.NoShield != "" {
				s = strings.TrimSuffix(s, ")") + ",no shield: " + e.NoShield + ")"
			}
		case Log:
			h.logs = append(h.logs, e)
			continue
		case Observe:
			continue
		default:
			h.t.Fatalf("unknown effect %T", e)
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// check holds the core to its invariants: one record of each fact.
func (h *harness) check() {
	h.t.Helper()
	c := h.c
	hold, wait := c.q.Len()
	if hold+wait != len(c.jobs) {
		h.t.Fatalf("the queue has %d requests, the core %d jobs", hold+wait, len(c.jobs))
	}
	perUser := map[uint32]int{}
	placing := 0
	for t, j := range c.jobs {
		e, ok := c.q.Lookup(t)
		if !ok || e.Holding != j.phase.Holding() {
			h.t.Fatalf("%s is %v, the queue says holding=%v (known %v)", j.name, j.phase, e.Holding, ok)
		}
		if j.phase == Waiting {
			perUser[j.uid]++
		}
		if j.phase == Placing && !j.named() {
			placing++
		}
		if j.conn != 0 && c.byConn[j.conn] != j {
			h.t.Fatalf("%s's connection %d is not indexed", j.name, j.conn)
		}
		if (j.phase == Preparing) != (slices.Contains(c.pin.waiting, t) || slices.Contains(c.shd.waiting, t)) {
			h.t.Fatalf("%s is %v; waiting for the pin: %v, for the shield: %v", j.name, j.phase, c.pin.waiting, c.shd.waiting)
		}
	}
	for conn, j := range c.byConn {
		if j.conn != conn || c.jobs[j.ticket] != j {
			h.t.Fatalf("connection %d indexes %s, gone or not its own", conn, j.name)
		}
	}
	if fmt.Sprint(perUser) != fmt.Sprint(c.waiting) {
		h.t.Fatalf("waiting per user %v, counted %v", c.waiting, perUser)
	}
	if placing != c.turn.placing {
		h.t.Fatalf("%d placements under way, counted %d", placing, c.turn.placing)
	}
}

// req builds an Acquire for connection conn from words: a mode
// ("exclusive", "shared", "group(7)"), then options: pls (preemptible),
// nb (nonblocking), timeout=D, max=D, gov=MODE, report, res=a,b, key=K,
// replace, expire=D, elapsed=D, last=D (its key succeeded D ago), uid=N.
func (h *harness) req(conn ConnID, words string) Acquire {
	h.t.Helper()
	f := strings.Fields(words)
	a := Acquire{Conn: conn, UID: 1000, User: "alice", PID: 100 + int(conn), Now: h.now, Mode: f[0],
		Command: []string{"job", strconv.Itoa(int(conn))}}
	dur := func(s string) Duration {
		d, err := parseDur(s)
		if err != nil {
			h.t.Fatal(err)
		}
		return d
	}
	for _, w := range f[1:] {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "pls":
			a.Preemptible = true
		case "nb":
			a.Nonblock = true
		case "timeout":
			a.Timeout = dur(v)
		case "max":
			a.MaxRuntime = dur(v)
		case "gov":
			a.Governor = v
		case "report":
			a.Report = true
		case "self":
			a.PlaceSelf, a.PIDStart = true, 5000+uint64(conn)
		case "bind":
			a.Bind = v
		case "owner":
			a.Owner = v
		case "res":
			a.Resources = strings.Split(v, ",")
		case "key":
			a.Key = v
		case "replace":
			a.Replace = true
		case "expire":
			a.ExpireAfter = dur(v)
		case "elapsed":
			a.IfElapsed = dur(v)
		case "last":
			a.LastSuccess = h.now - Time(dur(v))
		case "uid":
			n, _ := strconv.Atoi(v)
			a.UID, a.User = uint32(n), "user"+v
		default:
			h.t.Fatalf("req: unknown word %q", w)
		}
	}
	return a
}

func parseDur(s string) (Duration, error) {
	for _, u := range []struct {
		suf string
		d   Duration
	}{{"ms", Millisecond}, {"s", Second}, {"m", Minute}, {"h", Hour}} {
		if n, ok := strings.CutSuffix(s, u.suf); ok {
			if v, err := strconv.Atoi(n); err == nil {
				return Duration(v) * u.d, nil
			}
		}
	}
	return 0, errors.New("bad duration " + s)
}

func (h *harness) acquire(conn ConnID, words, want string) {
	h.t.Helper()
	h.step(h.req(conn, words), want)
}

func (h *harness) place(conn ConnID, want string) {
	h.t.Helper()
	h.step(Place{Conn: conn, PID: 200 + int(conn), Now: h.now}, want)
}

func (h *harness) placed(t lockq.Ticket, want string) {
	h.t.Helper()
	h.step(PlaceDone{Ticket: t, Where: "cg/" + h.name(t), Now: h.now}, want)
}

func (h *harness) closed(conn ConnID, want string) {
	h.t.Helper()
	h.step(Closed{Conn: conn, Now: h.now}, want)
}

func (h *harness) emptied(t lockq.Ticket, want string) {
	h.t.Helper()
	h.step(Emptied{Ticket: t, Now: h.now}, want)
}

func (h *harness) froze(want string) { h.t.Helper(); h.step(FreezerDone{Now: h.now}, want) }

func (h *harness) tick(d Duration, want string) {
	h.t.Helper()
	h.now += Time(d)
	h.step(Tick{Now: h.now}, want)
}

// phases lists the jobs as "x-1:running s-2:waiting".
func (h *harness) phases(want string) {
	h.t.Helper()
	var got []string
	for _, v := range h.c.Jobs() {
		s := v.Name + ":" + v.Phase.String()
		if v.Suspend == lockq.IsSuspended {
			s += "*"
		}
		got = append(got, s)
	}
	if g := strings.Join(got, " "); g != want {
		h.t.Fatalf("jobs %q, want %q", g, want)
	}
}
