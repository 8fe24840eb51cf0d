// Package core is perflockd's job lifecycle as a pure state machine, one
// level above the fair queue (package lockq) in the way etcd's raft RawNode
// sits under its node: the daemon's shell hands it typed events ([Core.Step]) and
// carries out the typed effects it returns. It owns the lockq.Queue and every
// piece of job state; it does no I/O, starts no goroutine and reads no clock
// (every event carries the time), so that every rule below is tested by
// replaying events, with no socket and no sleep.
//
// # A job's life
//
// Every request is a job with one [Phase]:
//
//   - Waiting: in line. It leaves the line when its client goes, when it is
//     cancelled (wholock --cancel, a newer job of its key with --replace) or
//     when its timeout passes.
//   - Granted: it holds its resources; its client has not yet asked to place
//     the job's first process.
//   - Preparing: an exclusive or group job of the machine waits for the
//     machine to be ready for it: the CPU frequency as it asked (--governor),
//     or an earlier pin restored (a group shares one pin; a job asking for
//     another is refused); then, where the daemon has a shield, everything
//     else on the machine confined to the housekeeping CPUs (a group shares
//     the shield too; if it cannot be raised, the job runs unshielded and its
//     report says why).
//   - PlaceQueued: it waits for its turn to be placed. At most MaxPlacing
//     placements run at once, exclusive and group jobs before shared ones,
//     so that a burst of pls jobs does not hold back an exclusive start.
//     Jobs that hold only named locks have no cgroup: they skip the pin and
//     the turn.
//   - Placing: the driver makes the job's cgroup or scope and moves the
//     process in. Its lease cannot end before the driver answers.
//   - Running: its processes run. It is stopped at its max runtime unless
//     the driver enforces it (a systemd scope's RuntimeMaxUSec), and when it
//     is cancelled.
//   - Empty: its place has no process left; the lease ends once the client
//     is gone. A job without a cgroup (the none driver, named locks) has
//     nothing to watch: its place is empty at once, and its lease rests on
//     its client's connection, which the job inherits. Its max runtime and
//     a cancel still stop it.
//
// The way through, and out:
//
//	Waiting ─▶ Granted ─▶ Preparing ─▶ PlaceQueued ─▶ Placing ─▶ Running ─▶ Empty
//	   │          └──────────┴────────────┘            │          │          │
//	   │           client gone: released         waits for the   client gone:
//	   │                                         driver's answer  waits for Empty
//	   └─ client gone, cancel, timeout: out of line                          │
//	                                                              client gone: released
//
// A job leaves in one place (leave): out of line, expired, or released. A
// lease ends only when the client is gone and, for a placed job, once its
// place is empty: a killed client does not free the machine while its
// benchmark runs.
//
// # Freezing
//
// The queue says which shared holders it wants suspended (lockq's
// suspension states are the one record of that); the freezer steers the
// shared side, frozen or thawed as a whole, towards it, one freeze or thaw
// at a time, and confirms each suspension once the driver says the freeze
// is done. A failed freeze falls back to draining: whoever waited for it
// waits for the shared jobs to end. A failed thaw is retried every
// ThawRetry. A job's client hears "frozen" once its freeze is confirmed and
// "thawed" once the shared side is thawed.
//
// # Restarts
//
// A restarted daemon steps [Adopt] before anything else: the running jobs
// its driver found (with their records: mode, resources, key, governor,
// runtime limit) hold again with their old tickets; shared ones stay frozen
// when an exclusive one runs, whatever order they are listed in; a CPU pin
// an earlier daemon left is kept for the adopted jobs that asked for it, or
// restored. Waiters of the earlier daemon rejoin with their old tickets
// during RejoinGrace, before new requests are queued.
package core
