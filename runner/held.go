package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/proto"
)

// HeldArg0 is the name under which a perflock binary runs as a held child:
// a process that waits for the go-ahead and then execs the job, so that the
// job starts already placed in its cgroup.
const HeldArg0 = "perflock-held"

// Descriptors of a held child (see HeldChildMain).
const (
	heldGoFD    = 3 // read end of the go pipe
	heldErrFD   = 4 // write end of the exec-error pipe
	heldLeaseFD = 5 // the daemon connection, unless -o; inherited by the job
)

// Options word of a held child (its first argument): heldPlain, or
// heldNoASLR to turn address-space randomization off for the job.
const (
	heldPlain  = "-"
	heldNoASLR = "no-aslr"
)

// HeldChildMain is the whole program of a held child, run as
// "perflock-held OPTIONS PATH ARGV0 ARG…", OPTIONS being "-" or "no-aslr".
// It marks descriptors 3 and 4 close-on-exec (descriptor 5, the lease, is
// left for the job), reads one byte from descriptor 3, and on 'g' execs
// PATH with ARGV0 ARG… and the current environment; with "no-aslr" it first
// sets ADDR_NO_RANDOMIZE in its persona (personality(2)), which the job and
// its children inherit. On end of file (the parent is gone or gave up) it
// exits 1 without running anything. If exec fails it writes the error text
// to descriptor 4 and exits 127 for a missing file, 126 otherwise; if the
// persona cannot be set, it writes why and exits 69 without running the
// job. It never returns.
func HeldChildMain() {
	unix.CloseOnExec(heldGoFD)
	unix.CloseOnExec(heldErrFD)
	var b [1]byte
	var n int
	var err error
	for {
		n, err = unix.Read(heldGoFD, b[:])
		if err != unix.EINTR {
			break
		}
	}
	if n != 1 || b[0] != 'g' || len(os.Args) < 4 {
		os.Exit(1)
	}
	opts, path, argv := os.Args[1], os.Args[2], os.Args[3:]
	switch opts {
	case heldPlain:
	case heldNoASLR:
		// The persona is the thread's: set it on the thread that execs.
		runtime.LockOSThread()
		if err := disableASLR(); err != nil {
			unix.Write(heldErrFD, []byte(strings.TrimPrefix(err.Error(), "runner: ")))
			os.Exit(ExitUnavailable)
		}
	default:
		unix.Write(heldErrFD, []byte("unknown held-child options "+strconv.Quote(opts)))
		os.Exit(ExitUnavailable)
	}
	err = syscall.Exec(path, argv, os.Environ())
	unix.Write(heldErrFD, []byte(err.Error()))
	if errors.Is(err, syscall.ENOENT) {
		os.Exit(ExitNotFound)
	}
	os.Exit(ExitCannotExec)
}

// heldChild is a started held child, not yet released.
type heldChild struct {
	cmd  *exec.Cmd
	goW  *os.File // write 'g' to release; close to abort
	errR *os.File // exec error text, EOF once exec succeeded
}

// startHeld starts self as a held child that will exec path with argv,
// sharing our stdio, environment, working directory and process group.
// lease, when not nil, becomes the child's descriptor 5; env, when not
// nil, is its environment (and so the job's); noASLR turns address-space
// randomization off for the job.
func startHeld(self, path string, argv, env []string, noASLR bool, stdin, stdout, stderr *os.File, lease *os.File) (*heldChild, error) {
	goR, goW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		goR.Close()
		goW.Close()
		return nil, err
	}
	opts := heldPlain
	if noASLR {
		opts = heldNoASLR
	}
	extra := []*os.File{goR, errW}
	if lease != nil {
		extra = append(extra, lease)
	}
	cmd := &exec.Cmd{
		Path:       self,
		Args:       append([]string{HeldArg0, opts, path}, argv...),
		Stdin:      stdin,
		Stdout:     stdout,
		Stderr:     stderr,
		Env:        env,
		ExtraFiles: extra,
	}
	err = cmd.Start()
	goR.Close()
	errW.Close()
	if err != nil {
		goW.Close()
		errR.Close()
		return nil, fmt.Errorf("start held child: %w", err)
	}
	return &heldChild{cmd: cmd, goW: goW, errR: errR}, nil
}

// release lets the child exec and returns the exec error text, "" when
// exec succeeded (or the child died before trying).
func (h *heldChild) release() string {
	_, werr := h.goW.Write([]byte{'g'})
	h.goW.Close()
	if werr != nil {
		h.errR.Close()
		return ""
	}
	msg, _ := io.ReadAll(io.LimitReader(h.errR, 4096))
	h.errR.Close()
	return strings.TrimSpace(string(msg))
}

// abort makes the child exit without running the job and reaps it.
func (h *heldChild) abort() {
	h.goW.Close()
	h.errR.Close()
	h.cmd.Process.Kill()
	h.cmd.Wait()
}

func dupCloexec(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// runHeld starts the job held, has the daemon place it, releases it,
// forwards signals while it runs and returns its exit status.
func (j *job) runHeld(ctx context.Context, self, path string) int {
	var lease *os.File
	if !j.o.Close {
		var err error
		if lease, err = j.c.dupFile(); err != nil {
			j.say("%v", err)
			return ExitUnavailable
		}
	}
	env := append(os.Environ(), EnvJob+"="+j.name)
	h, err := startHeld(self, path, j.argv, env, j.o.NoASLR, j.o.Stdin, j.o.Stdout, j.o.Stderr, lease)
	if lease != nil {
		lease.Close()
	}
	if err != nil {
		j.say("%v", err)
		return ExitUnavailable
	}
	if err := j.c.send(proto.Msg{Type: proto.TPlace, PID: h.cmd.Process.Pid}); err != nil {
		h.abort()
		j.say("cannot send to perflockd: %v", err)
		return ExitUnavailable
	}
	if code, ok := j.awaitPlaced(ctx, h.abort); !ok {
		return code
	}
	if msg := h.release(); msg != "" {
		j.say("cannot run %s: %s", printable(j.argv[0]), msg)
	}

	waited := make(chan error, 1)
	go func() { waited <- h.cmd.Wait() }()
	msgs := j.c.msgs
	ctxDone := ctx.Done()
	for {
		select {
		case sig := <-j.sigs:
			if shouldForward(sig, j.o.Stdin) {
				h.cmd.Process.Signal(sig)
			}
		case <-ctxDone:
			ctxDone = nil
			h.cmd.Process.Signal(syscall.SIGTERM)
		case r := <-msgs:
			if r.err != nil {
				msgs = nil
				j.verbose("lost the connection to perflockd: %v", connErr(r.err))
				continue
			}
			if !j.notice(r.msg) && r.msg.Type == proto.TError {
				j.verbose("perflockd: %s: %s", r.msg.Code, printable(r.msg.Message))
			}
		case <-waited:
			ws, _ := h.cmd.ProcessState.Sys().(syscall.WaitStatus)
			code := ExitStatus(ws)
			var rep *proto.Report
			why := "lost the connection to perflockd while the job ran"
			if msgs != nil {
				err := j.c.send(proto.Msg{Type: proto.TDone, Status: code})
				if j.o.Report != "" && err == nil {
					rep, why = j.awaitReport(msgs)
				}
			}
			j.c.close()
			if ws.Signaled() {
				j.verbose("%s: killed by signal %d (%v): exit status %d", printable(j.argv[0]), ws.Signal(), ws.Signal(), code)
			} else {
				j.verbose("%s: exit status %d", printable(j.argv[0]), code)
			}
			if j.o.Report != "" {
				j.emitReport(rep, why)
			}
			return code
		}
	}
}
