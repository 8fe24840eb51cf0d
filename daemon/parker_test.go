package daemon

import (
	"runtime"
	"testing"
	"time"

	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
)

// A waiting connection keeps no goroutine of its own: it is parked until
// it sends something or closes, and read then.
func TestWaitingConnectionsAreParkedWithoutAGoroutine(t *testing.T) {
	sock := startDaemon(t, Config{Policy: lockq.Freeze, drv: noneDriver{}})
	h := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	h.expect(proto.TGranted)
	before := runtime.NumGoroutine()
	const n = 100
	var ws []*client
	for range n {
		w := acquire(t, sock, proto.Msg{Mode: "exclusive"})
		w.expect(proto.TQueued)
		ws = append(ws, w)
	}
	// The test's clients hold no goroutines; the daemon's readers park.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine()-before > n/10 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines more for %d waiting connections", runtime.NumGoroutine()-before, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Parked connections are still heard: one closes, one is granted.
	ws[0].nc.Close()
	h.nc.Close()
	ws[1].expect(proto.TGranted)
	ws[1].send(proto.Msg{Type: proto.TDone, Status: 0})
	ws[1].nc.Close()
	ws[2].expect(proto.TGranted)
}
