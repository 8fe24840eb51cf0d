package daemon

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
)

// gatedDriver is the none driver with freezing, whose Place calls wait for
// the test to open them one by one, as a busy service manager would keep
// them waiting: it records the order in which they were made.
type gatedDriver struct {
	noneDriver
	mu    sync.Mutex
	calls []string      // job names, in the order Place was called
	made  chan struct{} // one per Place call
	gate  chan struct{} // one per Place call let through
}

func (d *gatedDriver) CanFreeze() bool                             { return true }
func (d *gatedDriver) SetSharedFrozen(context.Context, bool) error { return nil }

func (d *gatedDriver) Place(ctx context.Context, job JobSpec, pid int) (Placement, error) {
	d.mu.Lock()
	d.calls = append(d.calls, job.Name)
	d.mu.Unlock()
	d.made <- struct{}{}
	select {
	case <-d.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return nonePlacement{pid: pid}, nil
}

func (d *gatedDriver) order() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.calls...)
}

// A burst of shared jobs is placed 2 at a time, and an exclusive
// job granted meanwhile is placed before the shared jobs still waiting to
// be: it does not wait behind every scope the service manager has yet to
// start.
func TestExclusivePlacementGoesBeforeWaitingSharedOnes(t *testing.T) {
	d := &gatedDriver{made: make(chan struct{}, 16), gate: make(chan struct{})}
	srv, sock := startServer(t, Config{Policy: lockq.Freeze, drv: d})
	child := func() int {
		c := exec.Command("sleep", "1000")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c.Process.Pid
	}
	const shared = 2 + 2
	var ss []*client
	var phases []string
	for i := range shared {
		s := acquire(t, sock, proto.Msg{Mode: "shared", Preemptible: true})
		s.expect(proto.TGranted)
		s.send(proto.Msg{Type: proto.TPlace, PID: child()})
		ss = append(ss, s)
		// each connection has its own reader: wait for this place message
		// to be handled before the next job asks, so the order is known
		phases = append(phases, fmt.Sprintf("s-%d:%s", i+1, placePhase(i)))
		waitPhases(t, srv, strings.Join(phases, " "))
	}
	for range 2 {
		<-d.made // 2 shared placements under way, two waiting
	}
	waitList(t, sock, "1:granted 2:granted 3:granted 4:granted")
	x := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	x.expect(proto.TQueued)
	x.expect(proto.TGranted) // the shared jobs are frozen (as a whole)
	x.send(proto.Msg{Type: proto.TPlace, PID: child()})
	waitList(t, sock, "1:frozen 2:frozen 3:frozen 4:frozen 5:granted")
	waitPhases(t, srv, "s-1:placing s-2:placing s-3:place-queued s-4:place-queued x-5:place-queued")
	for range shared - 2 + 1 {
		d.gate <- struct{}{}
		<-d.made
	}
	for range 2 {
		d.gate <- struct{}{}
	}
	x.expect(proto.TPlaced)
	for _, s := range ss {
		for m := s.recv(); m.Type != proto.TPlaced; m = s.recv() {
			if m.Type != proto.TFrozen && m.Type != proto.TWaiting {
				t.Fatalf("shared job: got %+v, want frozen, then placed", m)
			}
		}
	}
	got := d.order()
	want := []string{"s-1", "s-2", "x-5", "s-3", "s-4"}
	if len(got) == len(want) && got[0] == "s-2" && got[1] == "s-1" {
		got[0], got[1] = got[1], got[0] // the first two run at once: either may call first
	}
	if len(got) != len(want) {
		t.Fatalf("Place calls %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Place calls %v, want %v", got, want)
		}
	}
}

// A job whose client leaves while its placement waits its turn is never
// placed: its lease ends, and the driver is not asked to move a process
// that may be gone (or, its pid reused, someone else's).
func TestPlacementOfALeftClientIsDropped(t *testing.T) {
	d := &gatedDriver{made: make(chan struct{}, 16), gate: make(chan struct{})}
	srv, sock := startServer(t, Config{Policy: lockq.Freeze, drv: d})
	var ss []*client
	var kids []*exec.Cmd
	var phases []string
	for i := range 2 + 1 {
		s := acquire(t, sock, proto.Msg{Mode: "shared", Preemptible: true})
		s.expect(proto.TGranted)
		c := exec.Command("sleep", "1000")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		s.send(proto.Msg{Type: proto.TPlace, PID: c.Process.Pid})
		ss, kids = append(ss, s), append(kids, c)
		// the last job must be the one waiting its turn when its client leaves
		phases = append(phases, fmt.Sprintf("s-%d:%s", i+1, placePhase(i)))
		waitPhases(t, srv, strings.Join(phases, " "))
	}
	for range 2 {
		<-d.made
	}
	waitList(t, sock, "1:granted 2:granted 3:granted")
	last := len(ss) - 1
	ss[last].nc.Close() // its client leaves while its placement waits
	kids[last].Process.Kill()
	kids[last].Wait()
	for range 2 {
		d.gate <- struct{}{}
	}
	for _, s := range ss[:last] {
		s.expect(proto.TPlaced)
	}
	waitList(t, sock, "1:running 2:running")
	if got := d.order(); len(got) != 2 {
		t.Fatalf("Place calls %v: the left client's job was placed", got)
	}
}

// placePhase is the phase of the i-th shared job (from 0) placed in a burst:
// 2 are placed at once, the rest wait their turn.
func placePhase(i int) string {
	if i < 2 {
		return "placing"
	}
	return "place-queued"
}

// waitPhases polls the core's phases, read on the loop, until they read
// want: a place message is handled after the client sent it.
func waitPhases(t *testing.T, s *server, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []string
		inLoop(s, func() {
			for _, v := range s.core.Jobs() {
				got = append(got, v.Name+":"+v.Phase.String())
			}
		})
		if strings.Join(got, " ") == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("phases %q, want %q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
