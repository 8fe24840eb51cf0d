package runner

import "syscall"

// Exit statuses of perfrun and pls besides the job's own. The package
// documentation lists them all.
const (
	ExitNoJob       = 1   // wholock --cancel: no such job
	ExitUsage       = 64  // bad usage; an invalid request
	ExitUnavailable = 69  // no daemon reachable or startable; the daemon failed
	ExitConflict    = 75  // the lock was not obtained (busy or timed out); default of -E
	ExitDenied      = 77  // wholock --cancel: the job is someone else's
	ExitCannotExec  = 126 // the command exists but cannot be executed
	ExitNotFound    = 127 // the command was not found
	ExitSignalBase  = 128 // 128+N: the job died of signal N, or we were cancelled by it
)

// ExitSignal is the exit status for death by (or cancellation by) sig: 128+N.
func ExitSignal(sig syscall.Signal) int { return ExitSignalBase + int(sig) }

// ExitStatus maps a wait status to an exit status the way shells do: the
// exit code of a process that exited, 128+N for one killed by signal N.
func ExitStatus(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return ExitSignal(ws.Signal())
	}
	return ExitUnavailable
}
