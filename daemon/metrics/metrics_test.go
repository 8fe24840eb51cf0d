package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/perflock/perflock/daemon"
	"github.com/perflock/perflock/lockq"
)

// serve runs Serve on a loopback port until the test ends and returns the
// /metrics URL.
func serve(t *testing.T, m *Metrics, stats func(context.Context) (daemon.Stats, error)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln, daemon.Info{Driver: "none", Policy: "drain"}, stats) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return "http://" + ln.Addr().String() + "/metrics"
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEventsAndStatsAreServed(t *testing.T) {
	m := New(slog.New(slog.DiscardHandler))
	var st daemon.Stats
	st.Requests[lockq.Shared][daemon.StateFrozen] = 2
	st.Conns = 5
	url := serve(t, m, func(context.Context) (daemon.Stats, error) { return st, nil })
	m.Granted(lockq.Group, 2*time.Second)
	m.Exited(lockq.Shared, daemon.ResultSignal)
	m.Freezer(true, time.Millisecond, errors.New("wedged"))
	code, body := get(t, url)
	for _, want := range []string{
		`perflock_queue_length{mode="shared",state="frozen"} 2`,
		`perflock_queue_length{mode="exclusive",state="waiting"} 0`,
		"perflock_connections_open 5",
		`perflock_grants_total{mode="group"} 1`,
		`perflock_wait_seconds_bucket{mode="group",le="1"} 0`,
		`perflock_wait_seconds_bucket{mode="group",le="5"} 1`,
		`perflock_job_exits_total{mode="shared",result="signal"} 1`,
		`perflock_freezer_failures_total{op="freeze"} 1`,
		"perflock_freezes_total 0",
		`perflock_daemon_info{driver="none",policy="drain"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("no %q in the scrape (status %d)", want, code)
		}
	}
}

// A daemon whose loop does not answer fails the scrape with the reason.
func TestAStatsErrorFailsTheScrape(t *testing.T) {
	m := New(slog.New(slog.DiscardHandler))
	url := serve(t, m, func(context.Context) (daemon.Stats, error) {
		return daemon.Stats{}, errors.New("the loop did not answer")
	})
	code, body := get(t, url)
	if code != http.StatusInternalServerError || !strings.Contains(body, "the loop did not answer") {
		t.Fatalf("status %d, body %q", code, body)
	}
}
