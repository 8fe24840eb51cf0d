package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// samples is a scrape flattened: `name{a="x",b="y"}` (labels sorted) to
// value; a histogram gives name_count and name_sum.
type samples map[string]float64

// scrape GETs /metrics over client and parses it with expfmt.
func scrape(t *testing.T, client *http.Client, url string) samples {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	out := samples{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := func(n string) string { return n + labelString(m.GetLabel()) }
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key(name)] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key(name)] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key(name+"_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key(name+"_sum")] = m.GetHistogram().GetSampleSum()
			default:
				out[key(name)] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

func labelString(ls []*dto.LabelPair) string {
	if len(ls) == 0 {
		return ""
	}
	var parts []string
	for _, l := range ls {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// family is the samples whose name (before the labels) is name.
func (s samples) family(name string) samples {
	out := samples{}
	for k, v := range s {
		if n, _, _ := strings.Cut(k, "{"); n == name {
			out[k] = v
		}
	}
	return out
}

// unixClient speaks HTTP over the Unix socket path.
func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}
}

// waitSample scrapes until key reads want: the daemon counts some events
// (a connection's close, a thaw) after the test can see them happen.
func (e *env) waitSample(scr func() samples, key string, want float64) samples {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := scr()
		if v, ok := s[key]; ok && v == want {
			return s
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s = %v (present %v), want %v", key, s[key], hasKey(s, key), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasKey(s samples, k string) bool { _, ok := s[k]; return ok }

// expectFamilies checks that each named family has exactly the samples of
// want (same label sets, same values).
func expectFamilies(t *testing.T, got, want samples, names ...string) {
	t.Helper()
	for _, d := range familyDiffs(got, want, names...) {
		t.Error(d)
	}
}

// familyDiffs lists how the named families of got differ from want's.
func familyDiffs(got, want samples, names ...string) []string {
	var diffs []string
	for _, name := range names {
		g, w := got.family(name), want.family(name)
		for k, v := range w {
			if gv, ok := g[k]; !ok || gv != v {
				diffs = append(diffs, fmt.Sprintf("%s = %v (present %v), want %v", k, gv, ok, v))
			}
		}
		for k, v := range g {
			if _, ok := w[k]; !ok {
				diffs = append(diffs, fmt.Sprintf("unexpected %s = %v", k, v))
			}
		}
	}
	slices.Sort(diffs)
	return diffs
}

// waitFamilies scrapes until the named families read exactly as in want
// and returns that scrape; after settleTime it fails the test with the
// differences of the last one. The daemon counts some events (a client's
// hang-up, a lease's end, a thaw) after the test has seen them happen.
func (e *env) waitFamilies(scr func() samples, want samples, names ...string) samples {
	e.t.Helper()
	var last samples
	eventually(e.t, settleTime, "the metrics "+strings.Join(names, ", "), func() (string, bool) {
		last = scr()
		d := familyDiffs(last, want, names...)
		return strings.Join(d, "; "), len(d) == 0
	})
	return last
}

// queueSamples is perflock_queue_length with every mode and state, zero
// but for nonzero.
func queueSamples(nonzero map[string]float64) samples {
	s := samples{}
	for _, m := range []string{"exclusive", "shared", "group"} {
		for _, st := range []string{"waiting", "running", "frozen"} {
			k := fmt.Sprintf(`perflock_queue_length{mode=%q,state=%q}`, m, st)
			s[k] = nonzero[m+"/"+st]
		}
	}
	return s
}

// byMode is one sample per mode of a family labelled by mode alone.
func byMode(name string, exclusive, shared, group float64) samples {
	return samples{
		name + `{mode="exclusive"}`: exclusive,
		name + `{mode="shared"}`:    shared,
		name + `{mode="group"}`:     group,
	}
}

// byModeAnd is a family labelled by mode and label, zero but for nonzero
// ("mode/value").
func byModeAnd(name, label string, values []string, nonzero map[string]float64) samples {
	s := samples{}
	for _, m := range []string{"exclusive", "shared", "group"} {
		for _, v := range values {
			s[name+labelString([]*dto.LabelPair{{Name: &label, Value: &v}, {Name: ptr("mode"), Value: &m}})] = nonzero[m+"/"+v]
		}
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func merge(ss ...samples) samples {
	out := samples{}
	for _, s := range ss {
		for k, v := range s {
			out[k] = v
		}
	}
	return out
}

// The metrics of a real run, scraped over the Unix socket: a frozen pls
// job, exclusive jobs that succeed, fail, die of a signal and lose their
// client, a group job, a busy refusal (-n), a timeout (-t), a wholock
// --cancel and a waiter whose client is killed. Every counter and label set
// is checked exactly, and each mode's wait histogram counts its grants.
func TestMetricsCountARealRun(t *testing.T) {
	if !cgroupfsAvailable() {
		t.Skip("needs root and a writable cgroup2 tree (the cgroupfs driver freezes pls jobs)")
	}
	e := newEnv(t, "", "")
	msock := filepath.Join(e.dir, "metrics.sock")
	e.startDaemon("cgroupfs", "freeze", "--metrics", "unix:"+msock)
	client := unixClient(msock)
	scr := func() samples { return scrape(t, client, "http://perflockd/metrics") }

	if fi, err := os.Lstat(msock); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o666 {
		t.Fatalf("metrics socket: %v, %v; want a socket of mode 0666", fi, err)
	}
	first := scr()
	expectFamilies(t, first, samples{`perflock_daemon_info{driver="cgroupfs",policy="freeze"}`: 1}, "perflock_daemon_info")
	if bi := first.family("perflock_build_info"); len(bi) != 1 || !strings.Contains(fmt.Sprint(bi), fmt.Sprintf("goversion=%q", runtime.Version())) {
		t.Errorf("perflock_build_info: %v", bi)
	}
	for _, k := range []string{"process_open_fds", "process_resident_memory_bytes", "go_goroutines"} {
		if !hasKey(first, k) {
			t.Errorf("no %s in the scrape", k)
		}
	}

	// The jobs whose exit results are counted keep a parent (-v), which
	// reports their status; a job run in place has none (result "unknown").
	p := e.job("pls", "P", []string{"-v"})
	e.started("P")
	x := e.job("perfrun", "X", []string{"-v"})
	e.started("X")
	e.waitQueue("P:frozen X:running")
	if code := e.exit(e.job("perfrun", "B", []string{"-n"})); code != 75 {
		t.Fatalf("perfrun -n on a busy machine: exit %d, want 75", code)
	}
	if code := e.exit(e.job("perfrun", "T", []string{"-t", "200ms"})); code != 75 {
		t.Fatalf("perfrun -t 200ms behind a running job: exit %d, want 75", code)
	}
	y := e.job("perfrun", "Y", []string{"-v"})
	e.waitQueue("P:frozen X:running Y:waiting")
	z := e.job("perfrun", "Z", []string{"-v"}) // a parent, killed while Z runs
	e.waitQueue("P:frozen X:running Y:waiting Z:waiting")
	g := e.job("perfrun", "G", []string{"-v", "--group", "7"})
	e.waitQueue("P:frozen X:running Y:waiting Z:waiting G:waiting")
	w := e.job("perfrun", "W", nil)
	e.waitQueue("P:frozen X:running Y:waiting Z:waiting G:waiting W:waiting")
	v := e.job("perfrun", "V", nil)
	e.waitQueue("P:frozen X:running Y:waiting Z:waiting G:waiting W:waiting V:waiting")

	// Seven clients hold connections; wholock's come and go.
	e.waitSample(scr, "perflock_connections_open", 7)
	e.waitFamilies(scr, merge(
		queueSamples(map[string]float64{"shared/frozen": 1, "exclusive/running": 1, "exclusive/waiting": 4, "group/waiting": 1}),
		byMode("perflock_grants_total", 1, 1, 0),
		byMode("perflock_busy_refusals_total", 1, 0, 0),
		byMode("perflock_timeouts_total", 1, 0, 0),
		samples{"perflock_freezes_total": 1, "perflock_thaws_total": 0},
	), "perflock_queue_length", "perflock_grants_total", "perflock_busy_refusals_total", "perflock_timeouts_total",
		"perflock_freezes_total", "perflock_thaws_total")

	jobs := map[string]int{}
	names := map[string]string{}
	for _, en := range e.list() {
		n := en.Command[len(en.Command)-1]
		jobs[n], names[n] = en.ChildPID, en.Job
	}
	// wholock --cancel takes W out of line; V's client is killed.
	if code := e.exit(e.start("wholock", []string{"--socket", e.sock, "--cancel", names["W"]})); code != 0 {
		t.Fatalf("wholock --cancel %s: exit %d", names["W"], code)
	}
	if code := e.exit(w); code != 75 {
		t.Fatalf("cancelled waiter: exit %d, want 75", code)
	}
	v.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.exit(v); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("waiter sent SIGTERM: exit %d", code)
	}
	e.waitQueue("P:frozen X:running Y:waiting Z:waiting G:waiting")

	// X fails; Y dies of SIGKILL; Z's client is killed and Z ends after.
	e.finish("X", 3)
	if code := e.exit(x); code != 3 {
		t.Fatalf("X: exit %d, want 3", code)
	}
	e.started("Y")
	for _, en := range e.list() {
		if en.Command[len(en.Command)-1] == "Y" {
			jobs["Y"] = en.ChildPID
		}
	}
	if jobs["Y"] <= 0 {
		t.Fatal("no child pid for Y in the listing")
	}
	syscall.Kill(jobs["Y"], syscall.SIGKILL)
	if code := e.exit(y); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("Y killed: exit %d", code)
	}
	e.started("Z")
	z.cmd.Process.Kill()
	e.exit(z)
	e.waitQueue("P:frozen Z:running G:waiting")
	e.finish("Z", 0)
	e.started("G")
	e.finish("G", 0)
	if code := e.exit(g); code != 0 {
		t.Fatalf("G: exit %d", code)
	}
	e.waitSample(scr, "perflock_thaws_total", 1)
	e.finish("P", 0)
	if code := e.exit(p); code != 0 {
		t.Fatalf("P: exit %d", code)
	}
	e.waitQueue("")

	e.waitSample(scr, "perflock_connections_open", 0)
	end := e.waitFamilies(scr, merge(
		queueSamples(nil),
		byMode("perflock_grants_total", 3, 1, 1),
		byMode("perflock_wait_seconds_count", 3, 1, 1),
		byMode("perflock_busy_refusals_total", 1, 0, 0),
		byMode("perflock_timeouts_total", 1, 0, 0),
		byModeAnd("perflock_cancellations_total", "reason", []string{"client", "cancel", "replace", "expire"},
			map[string]float64{"exclusive/cancel": 1, "exclusive/client": 1}),
		byModeAnd("perflock_job_exits_total", "result", []string{"success", "failure", "signal", "unknown"},
			map[string]float64{"shared/success": 1, "exclusive/failure": 1, "exclusive/signal": 1, "exclusive/unknown": 1, "group/success": 1}),
		samples{
			"perflock_freezes_total": 1, "perflock_thaws_total": 1,
			`perflock_freezer_failures_total{op="freeze"}`: 0, `perflock_freezer_failures_total{op="thaw"}`: 0,
			`perflock_freezer_duration_seconds_count{op="freeze"}`: 1, `perflock_freezer_duration_seconds_count{op="thaw"}`: 1,
		},
	), "perflock_queue_length", "perflock_grants_total", "perflock_wait_seconds_count", "perflock_busy_refusals_total",
		"perflock_timeouts_total", "perflock_cancellations_total", "perflock_job_exits_total", "perflock_freezes_total",
		"perflock_thaws_total", "perflock_freezer_failures_total", "perflock_freezer_duration_seconds_count")
	// The wait histogram counts every grant, mode by mode.
	for _, m := range []string{"exclusive", "shared", "group"} {
		k := fmt.Sprintf(`{mode=%q}`, m)
		if end["perflock_wait_seconds_count"+k] != end["perflock_grants_total"+k] {
			t.Errorf("mode %s: %v waits observed, %v grants", m, end["perflock_wait_seconds_count"+k], end["perflock_grants_total"+k])
		}
	}

	// Stalled scrapers (connected, never asking) do not hold up the daemon.
	var stalled []net.Conn
	for range 24 {
		c, err := net.Dial("unix", msock)
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	if code := e.exit(e.start("perfrun", []string{"--socket", e.sock, "--", "true"})); code != 0 {
		t.Fatalf("perfrun beside stalled scrapers: exit %d", code)
	}
	e.waitQueue("")
	for _, c := range stalled {
		c.Close()
	}
	e.waitSample(scr, `perflock_grants_total{mode="exclusive"}`, 4)
}

// perflockd refuses a --metrics address that is not loopback or a Unix
// socket: exit 64, a message that says what to do, and nothing served.
func TestMetricsRefusesNonLoopback(t *testing.T) {
	if systemdTier {
		t.Skip("host-tier test")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "perflock.sock")
	run := func(bin string, addr string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "--socket", sock, "--driver", "none", "--metrics", addr)
		out, err := cmd.CombinedOutput()
		return exitCode(err), string(out)
	}
	for _, addr := range []string{"0.0.0.0:9101", "192.0.2.7:9101", ":9101", "[::]:9101", "example.com:9101"} {
		code, out := run(filepath.Join(binDir, "perflockd"), addr)
		if code != 64 || !strings.Contains(out, "not a loopback address") || !strings.Contains(out, "reverse proxy") || !strings.Contains(out, "unix:PATH") {
			t.Errorf("--metrics %s: exit %d, output %q; want 64 and a hint to loopback, unix:PATH or a reverse proxy", addr, code, out)
		}
	}
	for addr, want := range map[string]string{"unix:": "needs a path", "127.0.0.1": "want unix:PATH or a loopback HOST:PORT", "127.0.0.1:http": "not a number"} {
		if code, out := run(filepath.Join(binDir, "perflockd"), addr); code != 64 || !strings.Contains(out, want) {
			t.Errorf("--metrics %s: exit %d, output %q; want 64 and %q", addr, code, out, want)
		}
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("a refused perflockd left its socket: %v", err)
	}
}

// --metrics localhost:0 serves on 127.0.0.1 at a port the log names.
func TestMetricsOnLoopbackTCP(t *testing.T) {
	e := newEnvWith(t, "none", "freeze", "--metrics", "localhost:0")
	re := regexp.MustCompile(`msg="serving metrics" addr=(127\.0\.0\.1:[0-9]+)`)
	var addr string
	e.waitFor("the metrics address in the log", func() bool {
		m := re.FindStringSubmatch(e.dlog.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	if code := e.exit(e.start("perfrun", []string{"--socket", e.sock, "--", "true"})); code != 0 {
		t.Fatalf("perfrun: exit %d", code)
	}
	e.waitQueue("")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	scr := func() samples { return scrape(t, client, "http://"+addr+"/metrics") }
	e.waitFamilies(scr, merge(
		// The none driver cannot freeze: the policy falls back to drain.
		samples{`perflock_daemon_info{driver="none",policy="drain"}`: 1},
		byMode("perflock_grants_total", 1, 0, 0),
	), "perflock_daemon_info", "perflock_grants_total")
	// It ran in place: no parent saw its status.
	e.waitSample(scr, `perflock_job_exits_total{mode="exclusive",result="unknown"}`, 1)
	resp, err := client.Get("http://" + addr + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %s, want 404", resp.Status)
	}
}
