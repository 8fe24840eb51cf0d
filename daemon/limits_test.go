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

// Connections are admitted, and refused over a limit, without the loop: a
// loop that is busy (here, blocked) neither delays a refusal nor, through
// a full inbox, stops the accepting of others.
func TestConnectionLimitsActWithoutTheLoop(t *testing.T) {
	s, sock := startServer(t, Config{MaxConnsPerUser: 2})
	release := make(chan struct{})
	s.post(func() { <-release })
	defer close(release)
	for range 2 {
		c := dial(t, sock)
		defer c.nc.Close()
	}
	extra := dial(t, sock)
	extra.send(proto.Msg{Type: proto.THello, Version: proto.Version}) // written before the answer is read: no broken pipe
	extra.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if m, err := extra.r.Read(); err != nil || m.Type != proto.TError || m.Code != proto.CodeLimit {
		t.Fatalf("a third connection while the loop is busy: %+v, %v; want a limit error at once", m, err)
	}
}
