package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/proto"
)

// A job runs in place where nothing needs a parent once it runs, as
// systemd-run --scope does: the daemon places this very process in the
// job's cgroup or scope, and this process then execs the job. One process
// start, not two; the job's exit status, signals and terminal are simply
// its own; the lease lives on in the job (its cgroup, and the daemon
// connection it inherits).
//
// A parent stays (the held child, see HeldChildMain) where a feature needs
// one after the job started: a run report (--report), the exit status a
// keyed job's history records (--key and what implies it), the notices of
// --verbose, and -o (the lease descriptor kept from the job, so the lease
// is this process's).

// inPlace reports whether the job execs in this process: Options.InPlace,
// no feature that needs a parent, a daemon that places its clients
// themselves (hello's in_place), descriptor 5 free for the lease (see
// leaseSlot), and not inside a job already: there the client would take
// the outer job's last process, and its last lease descriptor, into the
// inner job, and the outer lease would end while its work goes on.
func (j *job) inPlace() bool {
	return j.mayRunInPlace() && j.c.hello.InPlace
}

// mayRunInPlace is inPlace as far as this side decides it, before the
// daemon's hello is read: the request asks to be placed itself on grant
// (place_self) when it holds.
func (j *job) mayRunInPlace() bool {
	return j.o.InPlace && j.o.Bind == "" && !j.o.Close && j.o.Report == "" && j.o.Key == "" && !j.o.Verbose &&
		leaseSlot != slotRuntime && os.Getenv(EnvJob) == ""
}

// What descriptor heldLeaseFD (5) was when this program started.
const (
	slotFree      = iota // nothing: it was reserved (see init), for the lease
	slotInherited        // inherited from the parent: the lease replaces it, as a held child's does
	slotRuntime          // the Go runtime's own (close-on-exec): never touched
)

// leaseSlot is what descriptor 5 was when this program started. A job run
// in place gets its lease as descriptor 5, put there just before the exec;
// the Go runtime must not be using 5 then (its poller's descriptors come
// later), so it is reserved, close-on-exec, before main runs.
var leaseSlot = reserveLeaseSlot()

func reserveLeaseSlot() int {
	flags, err := unix.FcntlInt(heldLeaseFD, unix.F_GETFD, 0)
	switch {
	case err == nil && flags&unix.FD_CLOEXEC != 0:
		return slotRuntime // opened by this process: the runtime's
	case err == nil:
		return slotInherited
	}
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return slotRuntime // cannot reserve: do not use it
	}
	if fd != heldLeaseFD {
		err = unix.Dup3(fd, heldLeaseFD, unix.O_CLOEXEC)
		unix.Close(fd)
		if err != nil {
			return slotRuntime
		}
	}
	return slotFree
}

// runInPlace has the daemon place this process, then execs the job. It
// returns only when the job could not be started, with the status to exit
// with. A daemon that took the request's place_self is placing it already;
// an older one is asked to.
func (j *job) runInPlace(ctx context.Context, path string) int {
	if !(j.req.PlaceSelf && j.c.hello.PlaceSelf) {
		if err := j.c.send(proto.Msg{Type: proto.TPlace, PID: os.Getpid()}); err != nil {
			j.say("cannot send to perflockd: %v", err)
			return ExitUnavailable
		}
	}
	if code, ok := j.awaitPlaced(ctx, func() {}); !ok {
		return code
	}
	// This process is the job's now: a signal from here on is the job's.
	signal.Stop(j.sigs)
	select {
	case sig := <-j.sigs:
		return j.cancelled(sig)
	default:
	}
	if err := useStdio(j.o.Stdin, j.o.Stdout, j.o.Stderr); err != nil {
		j.say("cannot hand the standard files to the job: %v", err)
		return ExitUnavailable
	}
	if err := j.c.keepOnExec(); err != nil {
		j.say("cannot hand the lease to the job: %v", err)
		return ExitUnavailable
	}
	// The persona is the thread's: set it on the thread that execs.
	runtime.LockOSThread()
	if j.o.NoASLR {
		if err := disableASLR(); err != nil {
			j.say("--no-aslr: %s", trimPrefix(err))
			return ExitUnavailable
		}
	}
	err := syscall.Exec(path, j.argv, jobEnv(j.name))
	j.say("cannot run %s: %v", printable(j.argv[0]), err)
	if errors.Is(err, syscall.ENOENT) {
		return ExitNotFound
	}
	return ExitCannotExec
}

// jobEnv is this process's environment with EnvJob set to name (any
// earlier EnvJob taken out: the first of two would win).
func jobEnv(name string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, EnvJob+"=") })
	return append(env, EnvJob+"="+name)
}

// useStdio makes the job's standard files this process's descriptors 0, 1
// and 2 (they are already, unless Options named others).
func useStdio(files ...*os.File) error {
	for n, f := range files {
		if fd := int(f.Fd()); fd != n {
			if err := unix.Dup3(fd, n, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// runBound waits for the daemon to bind the lease to Options.Bind's cgroup
// (placed follows granted with no message from here), says the job's name
// on Stdout, and returns 0; the lease stays with the cgroup.
func (j *job) runBound(ctx context.Context) int {
	if code, ok := j.awaitPlaced(ctx, func() { j.c.close() }); !ok {
		return code
	}
	fmt.Fprintln(j.o.Stdout, j.name)
	return 0
}
