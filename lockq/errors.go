package lockq

import (
	"errors"
	"strconv"
)

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

// wrapped is an error of this package with the details of one case; it
// matches its sentinel with errors.Is.
type wrapped struct {
	err    error
	detail string
}

func (e *wrapped) Error() string { return e.err.Error() + ": " + e.detail }
func (e *wrapped) Unwrap() error { return e.err }

func detailError(err error, detail string) error { return &wrapped{err, detail} }

func ticketError(err error, t Ticket) error {
	return &wrapped{err, strconv.FormatUint(uint64(t), 10)}
}
