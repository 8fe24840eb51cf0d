package lockq

import "errors"

var (
	// ErrInvalid: the request is malformed (no valid mode, an empty or
	// repeated resource name, a preemptible request that is not shared).
	ErrInvalid = errors.New("lockq: invalid request")
	// ErrWouldBlock: Try found the request would have to wait for another job.
	ErrWouldBlock = errors.New("lockq: would block")
	// ErrUnknownTicket: no waiting or holding request has this ticket.
	ErrUnknownTicket = errors.New("lockq: unknown ticket")
	// ErrNotHolding: Release of a request that is still waiting.
	ErrNotHolding = errors.New("lockq: request is not holding")
)
