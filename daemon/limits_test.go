package daemon

import (
	"syscall"
	"testing"
	"time"

	"github.com/perflock/perflock/proto"
)

// A max runtime too large for nanoseconds means "very long", never a
// negative number that escapes --max-exclusive-runtime: the job is stopped
// at the daemon's cap.
func TestAHugeMaxRuntimeDoesNotEscapeTheCap(t *testing.T) {
	sock := startDaemon(t, Config{MaxExclusiveRuntime: 300 * time.Millisecond})
	c := acquire(t, sock, proto.Msg{Mode: "exclusive", MaxRuntimeMS: 9223372036855})
	c.expect(proto.TGranted)
	child, m := placeChild(t, c)
	if m.Type != proto.TPlaced {
		t.Fatalf("place: %+v", m)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	select {
	case err := <-exited:
		ws, _ := child.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Fatalf("the job ended with %v, want SIGTERM at the cap", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the job was not stopped at the daemon's cap of 300ms")
	}
}
