package daemon

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
)

// lateDriver is the none driver whose places never send their "empty"
// notification (WaitEmpty), as a rate-limited cgroup.events notification or
// a busy service manager is late; asked, they hold no process once the
// job's only process has exited.
type lateDriver struct{ noneDriver }

type latePlacement struct{ nonePlacement }

func (lateDriver) Place(_ context.Context, _ JobSpec, pid int) (Placement, error) {
	return latePlacement{nonePlacement{pid: pid}}, nil
}

func (latePlacement) WaitEmpty(ctx context.Context) error     { <-ctx.Done(); return ctx.Err() }
func (latePlacement) Populated(context.Context) (bool, error) { return false, nil }

// The lease of a job ends as soon as its first process has exited and its
// place holds no process: the next exclusive job does not wait for the
// place's own notification.
func TestLeaseEndsWhenTheFirstProcessExits(t *testing.T) {
	sock := startDaemon(t, Config{Policy: lockq.Freeze, drv: lateDriver{}})
	a := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	a.expect(proto.TGranted)
	child := exec.Command("sleep", "1000")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	a.send(proto.Msg{Type: proto.TPlace, PID: child.Process.Pid})
	a.expect(proto.TPlaced)
	b := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	b.expect(proto.TQueued)
	child.Process.Kill()
	child.Wait()
	a.send(proto.Msg{Type: proto.TDone, Status: 137})
	a.nc.Close()
	b.expect(proto.TGranted) // the place never said it was empty
}

// A client may ask to be placed itself, to exec its job in place; its
// lease then ends when it has exited (the none driver: with the connection
// it inherits).
func TestClientPlacedItself(t *testing.T) {
	sock := startDaemon(t, Config{Policy: lockq.Freeze, drv: lateDriver{}})
	a := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	a.expect(proto.TGranted)
	a.send(proto.Msg{Type: proto.TPlace, PID: os.Getpid()})
	a.expect(proto.TPlaced)
	if l := list(t, sock); len(l) != 1 || l[0].ChildPID != os.Getpid() || l[0].PID != os.Getpid() {
		t.Fatalf("listing %+v: want one job whose process is the client", l)
	}
}
