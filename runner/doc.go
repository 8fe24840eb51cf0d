// Package runner is the client side of perflock: it finds the daemon's
// socket (starting a per-user daemon when none runs), waits in the queue,
// runs the job as a child that starts inside its cgroup, forwards signals and
// passes the job's exit status through. The commands perfrun, pls and wholock
// are thin wrappers around [Run], [List] and [Watch].
//
// # Exit status
//
// [Run] returns the status the command should exit with:
//
//	0-125    the job's own exit status
//	128+N    the job died of signal N, or perfrun was cancelled by signal N while waiting
//	75       the lock was not obtained: busy (nonblock) or timed out ([ExitConflict]; Options.ConflictExit overrides it)
//	64       bad usage, or a request the daemon rejected as invalid ([ExitUsage])
//	69       no daemon reachable or startable, or it is overloaded, or the daemon failed ([ExitUnavailable])
//	126      the command was found but cannot be executed ([ExitCannotExec])
//	127      the command was not found ([ExitNotFound])
//
// # Processes
//
// With Options.InPlace, and where no feature needs a parent once the job runs,
// the daemon places the client's own process in the job's cgroup and the
// client then execs the command in place (see inplace.go): one process
// start. Otherwise the job is started as a re-execution of the running
// binary under the name [HeldArg0]; that process waits for a go-ahead on a
// pipe and then execs the command, so that the daemon can place it in the
// job's cgroup before the command's first instruction runs, and the client
// stays its parent. Every program that uses this package must call
// [HeldChildMain] first thing when os.Args[0] is [HeldArg0].
package runner
