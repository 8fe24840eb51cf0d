// Package lockq is perflock's fair lock queue: a pure state machine that
// takes events (enqueue, try, cancel, release, suspension confirmed, time
// passed) and returns actions (grant, suspend, resume, expire). It performs no
// I/O and reads no clock; the caller owns the queue, serialises calls to it and
// carries out the actions.
//
// # Rules
//
// A request names one or more resources (default: [Machine]) and a [Mode]:
// exclusive, shared, or group(ID). Shared is compatible with shared and
// group(a) with group(a); nothing else is compatible.
//
//  1. Every request gets a [Ticket] from one global sequence. A request is
//     granted when, on every resource it names, it is compatible with every
//     holder and with every earlier waiter (no barging). This is Gray's FIFO
//     fair scheduler; with one global order, multi-resource requests cannot
//     deadlock. It is granted on all its resources at once or not at all.
//  2. Group jump (Lustre): a group(a) request is granted at once when group(a)
//     already holds every resource it names and nothing else holds them, even
//     past earlier waiters.
//  3. Preemption, under the [Freeze] policy: a shared request may be marked
//     preemptible. When a waiting exclusive (or group) request is first in
//     line on every resource it names and only preemptible holders stand in
//     its way, the queue emits [Suspend] for them and grants the request once
//     the caller has confirmed each suspension with [Queue.Suspended]. When no
//     exclusive or group request holds or waits for their resources any more,
//     it emits [Resume]. Under [Drain] nothing is suspended: the exclusive
//     request waits for the shared holders to finish, and later shared
//     requests wait behind it.
//  4. [Queue.Try] fails at once with [ErrWouldBlock] and leaves the queue
//     untouched when a request would have to wait for another job; any request
//     may be cancelled, waiting or holding; a waiting request may carry a
//     deadline, and [Queue.Expire] removes those that are due.
//
// The example from "Unix file locking does not implement fair scheduling"
// holds: A shared and B shared hold, C exclusive waits, A releases, D shared
// arrives: D waits until C has held and released.
package lockq
