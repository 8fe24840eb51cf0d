package lockq

import (
	"slices"
	"strconv"
)

// Machine is the default resource: the machine's CPUs. Requests that name no
// resource ask for it.
const Machine = "cpu"

// Time is a point on the caller's clock, in nanoseconds. The queue compares
// deadlines with the times it is handed and never reads a clock; the zero
// Time means "no deadline", so a caller's clock must read above zero.
type Time int64

// Ticket identifies a request. Tickets come from one sequence per queue,
// starting at 1, in arrival order; a smaller ticket arrived earlier.
type Ticket uint64

// Policy says what happens to preemptible shared holders when an exclusive
// request is first in line.
type Policy uint8

const (
	// Freeze suspends preemptible holders so that the exclusive request is
	// granted as soon as the suspensions are confirmed.
	Freeze Policy = iota
	// Drain never suspends: the exclusive request waits for holders to end.
	Drain
)

func (p Policy) String() string {
	if p == Drain {
		return "drain"
	}
	return "freeze"
}

// Request is what a caller asks for.
type Request struct {
	Mode Mode
	// Resources to hold all at once; nil or empty means [Machine]. Names must
	// be non-empty and distinct.
	Resources []string
	// Preemptible marks a shared request whose holder may be suspended under
	// the Freeze policy. Only shared requests may be preemptible.
	Preemptible bool
	// Deadline, when not zero, is when a still-waiting request expires.
	Deadline Time
	// Owner is opaque data for the caller, returned in views.
	Owner any
}

// ActionKind says what the caller must do.
type ActionKind uint8

const (
	// Grant: the request now holds its resources; let its job run.
	Grant ActionKind = iota + 1
	// Suspend: suspend this preemptible holder's job, then call
	// [Queue.Suspended] (or [Queue.SuspendFailed]).
	Suspend
	// Resume: let this suspended holder's job run again. No reply is needed.
	Resume
	// Expire: the waiting request reached its deadline and was removed.
	Expire
)

func (k ActionKind) String() string {
	switch k {
	case Grant:
		return "grant"
	case Suspend:
		return "suspend"
	case Resume:
		return "resume"
	case Expire:
		return "expire"
	}
	return "invalid"
}

// Action is one thing for the caller to do, about one request.
type Action struct {
	Kind   ActionKind
	Ticket Ticket
}

func (a Action) String() string {
	return a.Kind.String() + "(" + strconv.FormatUint(uint64(a.Ticket), 10) + ")"
}

// holdState is where a holder is in the suspension cycle.
type holdState uint8

const (
	running holdState = iota
	suspending
	suspended
)

// req is a request in the queue: waiting (nodes != nil) or holding.
type req struct {
	Request
	ticket  Ticket
	res     []*resource
	nodes   []*node // while waiting: this request's node in each resource's wait list
	holding bool
	hs      holdState
	// pending: a waiting request for which suspensions were asked; it counts
	// in each of its resources' pending.
	pending bool
	// Global wait list and the per-group wait list, in ticket order.
	prev, next   *req
	gprev, gnext *req
	heapIdx      int // index in the deadline heap, or -1

	// Room for the common single-resource request, to save allocations.
	resBuf  [1]*resource
	nodeBuf [1]node
	nodePtr [1]*node
}

// machineOnly is the Resources of a request that names none. Never modified.
var machineOnly = []string{Machine}

// node is a request's place in one resource's wait list.
type node struct {
	r          *req
	prev, next *node
}

// resource holds one resource's wait list and a summary of its holders.
type resource struct {
	name            string
	head, tail      *node
	brk             *node // first waiter not compatible with head; nil if none
	holders         map[Ticket]*req
	suspended       map[Ticket]*req // holders suspending or suspended
	excl, group     int             // exclusive and group holders
	groupID         uint32          // the holding group, when group > 0
	sharedActive    int             // shared holders running or suspending
	pinned          int             // running shared holders that are not preemptible
	pending         int             // pending preemptors waiting on this resource
	rescan, touched bool            // marks for the current event
}

// Queue is the fair lock queue. It is not safe for concurrent use: one owner
// calls it and carries out the actions it returns, in order.
type Queue struct {
	policy    Policy
	last      Ticket
	reqs      map[Ticket]*req
	holding   map[Ticket]*req
	resources map[string]*resource
	whead     *req // global wait list, ticket order
	wtail     *req
	nwaiting  int
	groups    map[uint32]*groupList
	deadlines deadlineHeap

	// Per-event scratch, reused.
	acts    []Action
	rescans []*resource
	touches []*resource
	jumps   []uint32
}

type groupList struct{ head, tail *req }

// New returns an empty queue with the given policy.
func New(p Policy) *Queue {
	return &Queue{
		policy:    p,
		reqs:      make(map[Ticket]*req),
		holding:   make(map[Ticket]*req),
		resources: make(map[string]*resource),
		groups:    make(map[uint32]*groupList),
	}
}

// Policy returns the queue's policy.
func (q *Queue) Policy() Policy { return q.policy }

// Enqueue adds a request and returns its ticket with the actions it causes:
// a Grant for it when nothing stands in its way, Suspend actions when only
// preemptible holders do (under Freeze), or none when it must wait.
func (q *Queue) Enqueue(r Request) (Ticket, []Action, error) {
	c, err := q.newReq(r)
	if err != nil {
		return 0, nil, err
	}
	q.last++
	c.ticket = q.last
	q.reqs[c.ticket] = c
	for _, rs := range c.res {
		q.touch(rs)
	}
	if q.jumpable(c) || q.grantableAtTail(c) {
		q.grant(c)
	} else {
		q.wait(c)
	}
	return c.ticket, q.run(), nil
}

// Try is Enqueue for a request that must not wait: it fails with
// ErrWouldBlock, leaving the queue untouched and using no ticket, unless the
// request is granted at once or needs only the suspension of preemptible
// holders (under Freeze), which Enqueue then asks for.
func (q *Queue) Try(r Request) (Ticket, []Action, error) {
	c, err := q.newReq(r)
	if err != nil {
		return 0, nil, err
	}
	if !q.jumpable(c) && !q.grantableAtTail(c) && !q.preemptableAtTail(c) {
		return 0, nil, ErrWouldBlock
	}
	return q.Enqueue(r)
}

// Cancel removes a request, waiting or holding. Cancelling a holder is the
// same as releasing it.
func (q *Queue) Cancel(t Ticket) ([]Action, error) {
	c, ok := q.reqs[t]
	if !ok {
		return nil, ticketError(ErrUnknownTicket, t)
	}
	if c.holding {
		q.unhold(c)
	} else {
		q.unwait(c)
	}
	delete(q.reqs, t)
	return q.run(), nil
}

// Release ends a holder's hold. It fails with ErrNotHolding for a waiting
// request (use Cancel) and ErrUnknownTicket for one that is gone.
func (q *Queue) Release(t Ticket) ([]Action, error) {
	c, ok := q.reqs[t]
	if !ok {
		return nil, ticketError(ErrUnknownTicket, t)
	}
	if !c.holding {
		return nil, ticketError(ErrNotHolding, t)
	}
	return q.Cancel(t)
}

// Suspended confirms that a holder asked to suspend is suspended. A
// confirmation for a holder no longer asked to suspend (resumed or released
// meanwhile) changes nothing.
func (q *Queue) Suspended(t Ticket) ([]Action, error) {
	c, ok := q.reqs[t]
	if !ok {
		return nil, ticketError(ErrUnknownTicket, t)
	}
	if !c.holding || c.hs != suspending {
		return nil, nil
	}
	c.hs = suspended
	for _, r := range c.res {
		r.sharedActive--
		q.rescan(r)
	}
	return q.run(), nil
}

// SuspendFailed reports that a holder could not be suspended. The holder is
// no longer preemptible: requests waiting on it now wait for it to end, and
// other holders suspended for them are resumed.
func (q *Queue) SuspendFailed(t Ticket) ([]Action, error) {
	c, ok := q.reqs[t]
	if !ok {
		return nil, ticketError(ErrUnknownTicket, t)
	}
	if !c.holding || !c.Preemptible || q.policy == Drain {
		return nil, nil
	}
	if c.hs != running {
		q.setRunning(c)
	}
	c.Preemptible = false
	for _, r := range c.res {
		r.pinned++
		q.touch(r)
		// Whoever waited for this holder's suspension waits for its end now.
		for n := r.head; n != nil && r.firstRun(n); n = n.next {
			if n.r.pending {
				q.unpend(n.r)
			}
		}
	}
	return q.run(), nil
}

// Expire removes every waiting request whose deadline is at or before now,
// returning an Expire action for each and whatever their leaving causes.
func (q *Queue) Expire(now Time) []Action {
	for len(q.deadlines) > 0 && q.deadlines[0].Deadline <= now {
		c := q.deadlines[0]
		q.unwait(c)
		delete(q.reqs, c.ticket)
		q.acts = append(q.acts, Action{Expire, c.ticket})
	}
	return q.run()
}

// NextDeadline returns the earliest deadline of a waiting request.
func (q *Queue) NextDeadline() (Time, bool) {
	if len(q.deadlines) == 0 {
		return 0, false
	}
	return q.deadlines[0].Deadline, true
}

// Len returns the numbers of holders and waiters.
func (q *Queue) Len() (holding, waiting int) {
	return len(q.reqs) - q.nwaiting, q.nwaiting
}

func (q *Queue) newReq(r Request) (*req, error) {
	if !r.Mode.valid() {
		return nil, detailError(ErrInvalid, "no valid mode")
	}
	if r.Preemptible && r.Mode.Kind != Shared {
		return nil, detailError(ErrInvalid, "only shared requests can be preemptible, not "+r.Mode.String())
	}
	c := &req{Request: r, heapIdx: -1}
	names := r.Resources
	switch len(names) {
	case 0:
		names = machineOnly
		c.res = c.resBuf[:]
	case 1:
		c.res = c.resBuf[:]
	default:
		c.res = make([]*resource, len(names))
	}
	if len(names) == 1 && names[0] == Machine {
		c.Resources = machineOnly
	} else {
		c.Resources = slices.Clone(names)
	}
	for i, name := range names {
		if name == "" {
			return nil, detailError(ErrInvalid, "empty resource name")
		}
		if slices.Contains(names[:i], name) {
			return nil, detailError(ErrInvalid, "resource "+strconv.Quote(name)+" named twice")
		}
		c.res[i] = q.resources[name] // nil when unknown: looked up again in wait or grant
	}
	return c, nil
}

// resource returns the named resource, creating it.
func (q *Queue) resource(name string) *resource {
	r := q.resources[name]
	if r == nil {
		r = &resource{name: name, holders: make(map[Ticket]*req), suspended: make(map[Ticket]*req)}
		q.resources[name] = r
	}
	return r
}

func (q *Queue) materialise(c *req) {
	for i, r := range c.res {
		if r == nil {
			c.res[i] = q.resource(c.Resources[i])
		}
	}
}

// wait puts c at the end of the line.
func (q *Queue) wait(c *req) {
	q.materialise(c)
	if len(c.res) == 1 {
		c.nodes = c.nodePtr[:]
	} else {
		c.nodes = make([]*node, len(c.res))
	}
	for i, r := range c.res {
		var n *node
		if i == 0 {
			n = &c.nodeBuf[0]
		} else {
			n = new(node)
		}
		c.nodes[i] = r.push(c, n)
		q.touch(r)
	}
	c.prev = q.wtail
	if q.wtail != nil {
		q.wtail.next = c
	} else {
		q.whead = c
	}
	q.wtail = c
	q.nwaiting++
	if c.Mode.Kind == Group {
		g := q.groups[c.Mode.Group]
		if g == nil {
			g = &groupList{}
			q.groups[c.Mode.Group] = g
		}
		c.gprev = g.tail
		if g.tail != nil {
			g.tail.gnext = c
		} else {
			g.head = c
		}
		g.tail = c
	}
	if c.Deadline != 0 {
		q.deadlines.push(c)
	}
}

// unlink takes a waiting request out of every wait list.
func (q *Queue) unlink(c *req) {
	for i, r := range c.res {
		r.remove(c.nodes[i])
	}
	c.nodes = nil
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		q.whead = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		q.wtail = c.prev
	}
	c.prev, c.next = nil, nil
	q.nwaiting--
	if c.Mode.Kind == Group {
		g := q.groups[c.Mode.Group]
		if c.gprev != nil {
			c.gprev.gnext = c.gnext
		} else {
			g.head = c.gnext
		}
		if c.gnext != nil {
			c.gnext.gprev = c.gprev
		} else {
			g.tail = c.gprev
		}
		c.gprev, c.gnext = nil, nil
		if g.head == nil {
			delete(q.groups, c.Mode.Group)
		}
	}
	if c.heapIdx >= 0 {
		q.deadlines.remove(c)
	}
	if c.pending {
		q.unpend(c)
	}
}

// unwait removes a waiting request that leaves without a grant.
func (q *Queue) unwait(c *req) {
	q.unlink(c)
	for _, r := range c.res {
		q.rescan(r)
	}
}

func (q *Queue) unpend(c *req) {
	c.pending = false
	for _, r := range c.res {
		r.pending--
		q.touch(r)
	}
}

// grant makes c a holder. c is new or waiting.
func (q *Queue) grant(c *req) {
	if c.nodes != nil {
		q.unlink(c)
	}
	q.materialise(c)
	c.holding = true
	c.hs = running
	q.holding[c.ticket] = c
	for _, r := range c.res {
		r.holders[c.ticket] = c
		switch c.Mode.Kind {
		case Exclusive:
			r.excl++
		case Group:
			r.group++
			r.groupID = c.Mode.Group
		case Shared:
			r.sharedActive++
			if !c.Preemptible || q.policy == Drain {
				r.pinned++
			}
		}
		// Waiters that now head this resource conflict with c: nothing new
		// becomes grantable here, but preemption may now apply.
		q.touch(r)
	}
	if c.Mode.Kind == Group && q.groups[c.Mode.Group] != nil {
		q.jumps = append(q.jumps, c.Mode.Group)
	}
	q.acts = append(q.acts, Action{Grant, c.ticket})
}

// unhold ends a hold.
func (q *Queue) unhold(c *req) {
	if c.hs != running {
		q.setRunning(c)
	}
	for _, r := range c.res {
		delete(r.holders, c.ticket)
		switch c.Mode.Kind {
		case Exclusive:
			r.excl--
		case Group:
			r.group--
		case Shared:
			r.sharedActive--
			if !c.Preemptible || q.policy == Drain {
				r.pinned--
			}
		}
		q.rescan(r)
	}
	c.holding = false
	delete(q.holding, c.ticket)
}

// setRunning moves a suspending or suspended holder back to running.
func (q *Queue) setRunning(c *req) {
	for _, r := range c.res {
		delete(r.suspended, c.ticket)
		if c.hs == suspended {
			r.sharedActive++
		}
		q.touch(r)
	}
	c.hs = running
}

func (q *Queue) touch(r *resource) {
	if r != nil && !r.touched {
		r.touched = true
		q.touches = append(q.touches, r)
	}
}

func (q *Queue) rescan(r *resource) {
	q.touch(r)
	if !r.rescan {
		r.rescan = true
		q.rescans = append(q.rescans, r)
	}
}

// run settles the queue after an event: grants first, then group jumps,
// then new suspensions, then resumptions. It returns the actions, resumes
// first, so a resumed job runs before a job granted beside it is placed.
func (q *Queue) run() []Action {
	for len(q.rescans) > 0 || len(q.jumps) > 0 {
		for len(q.rescans) > 0 {
			r := q.rescans[len(q.rescans)-1]
			q.rescans = q.rescans[:len(q.rescans)-1]
			r.rescan = false
			q.grantFirstRun(r)
		}
		for len(q.jumps) > 0 {
			id := q.jumps[len(q.jumps)-1]
			q.jumps = q.jumps[:len(q.jumps)-1]
			q.jumpGroup(id)
		}
	}
	if q.policy == Freeze {
		for i := 0; i < len(q.touches); i++ { // touches may grow
			q.preempt(q.touches[i])
		}
	}
	for _, r := range q.touches {
		q.resume(r)
	}
	for _, r := range q.touches {
		r.touched = false
		if r.head == nil && len(r.holders) == 0 {
			delete(q.resources, r.name)
		}
	}
	q.touches = q.touches[:0]

	acts := q.acts
	q.acts = nil
	// Resumes first, the rest in the order they happened.
	slices.SortStableFunc(acts, func(a, b Action) int {
		return boolInt(b.Kind == Resume) - boolInt(a.Kind == Resume)
	})
	return acts
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// grantFirstRun grants what it can of the requests that head r's line.
func (q *Queue) grantFirstRun(r *resource) {
	if r.head == nil || !r.admits(r.head.r.Mode) {
		return // the whole first run has the head's class: none can go
	}
	for n := r.head; n != nil && r.firstRun(n); {
		next := n.next
		if q.grantable(n.r) {
			q.grant(n.r)
		}
		n = next
	}
}

// grantable: c heads the line on each of its resources and the holders there
// admit it.
func (q *Queue) grantable(c *req) bool {
	for i, r := range c.res {
		if !r.firstRun(c.nodes[i]) || !r.admits(c.Mode) {
			return false
		}
	}
	return true
}

// grantableAtTail: a new request c, placed at the end of every line, would be
// granted.
func (q *Queue) grantableAtTail(c *req) bool {
	for _, r := range c.res {
		if r != nil && (!r.firstRunAtTail(c.Mode) || !r.admits(c.Mode)) {
			return false
		}
	}
	return true
}

// preemptableAtTail: a new request c would need only suspensions.
func (q *Queue) preemptableAtTail(c *req) bool {
	if q.policy != Freeze || !c.Mode.excludesShared() {
		return false
	}
	for _, r := range c.res {
		if r != nil && (!r.firstRunAtTail(c.Mode) || !r.preemptableBy(c.Mode)) {
			return false
		}
	}
	return true
}

// jumpable: group jump. c is a group(a) request, group(a) holds every
// resource it names and nothing else that is running holds them.
func (q *Queue) jumpable(c *req) bool {
	if c.Mode.Kind != Group {
		return false
	}
	for _, r := range c.res {
		if r == nil || r.group == 0 || r.groupID != c.Mode.Group || r.excl > 0 || r.sharedActive > 0 {
			return false
		}
	}
	return true
}

func (q *Queue) jumpGroup(id uint32) {
	g := q.groups[id]
	for c := g.headOrNil(); c != nil; {
		next := c.gnext
		if q.jumpable(c) {
			q.grant(c)
		}
		c = next
	}
}

func (g *groupList) headOrNil() *req {
	if g == nil {
		return nil
	}
	return g.head
}

// preempt starts suspensions for the requests heading r's line that only
// preemptible holders keep waiting.
func (q *Queue) preempt(r *resource) {
	if r.head == nil || !r.head.r.Mode.excludesShared() || !r.preemptableBy(r.head.r.Mode) {
		return
	}
	for n := r.head; n != nil && r.firstRun(n); n = n.next {
		c := n.r
		if c.pending || !q.preemptable(c) {
			continue
		}
		c.pending = true
		var stop []*req
		for _, rr := range c.res {
			rr.pending++
			for _, h := range rr.holders {
				if h.Mode.Kind == Shared && h.Preemptible && h.hs == running {
					h.hs = suspending
					for _, hr := range h.res {
						hr.suspended[h.ticket] = h
					}
					stop = append(stop, h)
				}
			}
		}
		slices.SortFunc(stop, func(a, b *req) int { return cmpTicket(a.ticket, b.ticket) })
		for _, h := range stop {
			q.acts = append(q.acts, Action{Suspend, h.ticket})
		}
	}
}

func cmpTicket(a, b Ticket) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (q *Queue) preemptable(c *req) bool {
	for i, r := range c.res {
		if !r.firstRun(c.nodes[i]) || !r.preemptableBy(c.Mode) {
			return false
		}
	}
	return true
}

// resume resumes r's suspended holders that nothing needs suspended any more.
func (q *Queue) resume(r *resource) {
	if len(r.suspended) == 0 || r.excl > 0 || r.group > 0 || r.pending > 0 {
		return
	}
	var wake []*req
	for _, h := range r.suspended {
		if !needsSuspension(h) {
			wake = append(wake, h)
		}
	}
	slices.SortFunc(wake, func(a, b *req) int { return cmpTicket(a.ticket, b.ticket) })
	for _, h := range wake {
		q.setRunning(h)
		q.acts = append(q.acts, Action{Resume, h.ticket})
	}
}

// needsSuspension: an exclusive or group request holds, or waits for
// suspensions, on one of h's resources.
func needsSuspension(h *req) bool {
	for _, r := range h.res {
		if r.excl > 0 || r.group > 0 || r.pending > 0 {
			return true
		}
	}
	return false
}

// admits: the holders of r let a request in mode m hold it too.
func (r *resource) admits(m Mode) bool {
	switch m.Kind {
	case Shared:
		return r.excl == 0 && r.group == 0
	case Group:
		return r.excl == 0 && (r.group == 0 || r.groupID == m.Group) && r.sharedActive == 0
	default:
		return r.excl == 0 && r.group == 0 && r.sharedActive == 0
	}
}

// preemptableBy: every holder of r in the way of a request in mode m
// (exclusive or group) is a preemptible shared holder.
func (r *resource) preemptableBy(m Mode) bool {
	return r.excl == 0 && (r.group == 0 || (m.Kind == Group && r.groupID == m.Group)) && r.pinned == 0
}

// push appends c to r's wait list, in node n.
func (r *resource) push(c *req, n *node) *node {
	*n = node{r: c, prev: r.tail}
	if r.tail == nil {
		r.head, r.tail = n, n
		return n
	}
	r.tail.next = n
	r.tail = n
	if r.brk == nil && !r.head.r.Mode.Compatible(c.Mode) {
		r.brk = n
	}
	return n
}

// remove unlinks n from r's wait list, keeping brk right.
func (r *resource) remove(n *node) {
	wasHead, wasBrk, after := n == r.head, n == r.brk, n.next
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		r.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		r.tail = n.prev
	}
	n.prev, n.next = nil, nil
	switch {
	case r.head == nil:
		r.brk = nil
	case wasHead && r.brk == r.head:
		r.brk = r.scanBreak(r.head.next) // a new class heads the line
	case wasBrk:
		r.brk = r.scanBreak(after) // the run after n may join the first run
	}
}

func (r *resource) scanBreak(from *node) *node {
	for m := from; m != nil; m = m.next {
		if !r.head.r.Mode.Compatible(m.r.Mode) {
			return m
		}
	}
	return nil
}

// firstRun: n is compatible with every waiter before it on r.
func (r *resource) firstRun(n *node) bool {
	if n == r.head {
		return true
	}
	return r.head.r.Mode.Compatible(n.r.Mode) && (r.brk == nil || n.r.ticket < r.brk.r.ticket)
}

// firstRunAtTail: a new waiter in mode m would be compatible with every waiter on r.
func (r *resource) firstRunAtTail(m Mode) bool {
	return r.head == nil || (r.brk == nil && r.head.r.Mode.Compatible(m))
}

// Last returns the last ticket given out.
func (q *Queue) Last() Ticket { return q.last }

// Reserve makes every ticket from now on larger than t: a restarted caller
// continues its old sequence.
func (q *Queue) Reserve(t Ticket) {
	q.last = max(q.last, t)
}

// Adopt records a holder that already holds, with its old ticket: a
// restarted caller re-creating the holders it finds running. It checks no
// compatibility (the holders are facts); isSuspended marks a preemptible
// shared holder that is suspended. Later tickets are larger
// than t.
func (q *Queue) Adopt(t Ticket, r Request, isSuspended bool) ([]Action, error) {
	if _, ok := q.reqs[t]; ok || t == 0 {
		return nil, detailError(ErrInvalid, "ticket "+strconv.FormatUint(uint64(t), 10)+" is in use")
	}
	if isSuspended && !(r.Preemptible && r.Mode.Kind == Shared) {
		return nil, detailError(ErrInvalid, "only preemptible shared holders can be suspended")
	}
	c, err := q.newReq(r)
	if err != nil {
		return nil, err
	}
	c.ticket = t
	q.Reserve(t)
	q.reqs[t] = c
	q.grant(c)
	q.acts = q.acts[:len(q.acts)-1] // a fact, not a grant to announce
	if isSuspended && q.policy == Freeze {
		c.hs = suspended
		for _, r := range c.res {
			r.sharedActive--
			r.suspended[t] = c
		}
	}
	return q.run(), nil
}

// EnqueueAt is Enqueue with the request's old ticket, for a waiter that
// rejoins after its caller restarted: it takes its old place in line. The
// ticket must not be in use and must have been given out before (at most
// Last).
func (q *Queue) EnqueueAt(t Ticket, r Request) ([]Action, error) {
	if _, ok := q.reqs[t]; ok || t == 0 || t > q.last {
		return nil, detailError(ErrInvalid, "ticket "+strconv.FormatUint(uint64(t), 10)+" cannot rejoin")
	}
	c, err := q.newReq(r)
	if err != nil {
		return nil, err
	}
	c.ticket = t
	q.reqs[t] = c
	q.waitAt(c)
	for _, rs := range c.res {
		q.rescan(rs)
	}
	return q.run(), nil
}

// waitAt puts c in every line at its ticket's place.
func (q *Queue) waitAt(c *req) {
	q.materialise(c)
	c.nodes = make([]*node, len(c.res))
	for i, r := range c.res {
		c.nodes[i] = r.insert(c, new(node))
		q.touch(r)
	}
	var before *req // the last waiter with a smaller ticket
	for w := q.wtail; w != nil; w = w.prev {
		if w.ticket < c.ticket {
			before = w
			break
		}
	}
	if before == nil {
		c.next = q.whead
		if q.whead != nil {
			q.whead.prev = c
		} else {
			q.wtail = c
		}
		q.whead = c
	} else {
		c.prev, c.next = before, before.next
		if before.next != nil {
			before.next.prev = c
		} else {
			q.wtail = c
		}
		before.next = c
	}
	q.nwaiting++
	if c.Mode.Kind == Group {
		g := q.groups[c.Mode.Group]
		if g == nil {
			g = &groupList{}
			q.groups[c.Mode.Group] = g
		}
		var gb *req
		for w := g.tail; w != nil; w = w.gprev {
			if w.ticket < c.ticket {
				gb = w
				break
			}
		}
		if gb == nil {
			c.gnext = g.head
			if g.head != nil {
				g.head.gprev = c
			} else {
				g.tail = c
			}
			g.head = c
		} else {
			c.gprev, c.gnext = gb, gb.gnext
			if gb.gnext != nil {
				gb.gnext.gprev = c
			} else {
				g.tail = c
			}
			gb.gnext = c
		}
	}
	if c.Deadline != 0 {
		q.deadlines.push(c)
	}
}

// insert puts c into r's wait list in ticket order and recomputes brk.
func (r *resource) insert(c *req, n *node) *node {
	*n = node{r: c}
	var before *node
	for m := r.tail; m != nil; m = m.prev {
		if m.r.ticket < c.ticket {
			before = m
			break
		}
	}
	if before == nil {
		n.next = r.head
		if r.head != nil {
			r.head.prev = n
		} else {
			r.tail = n
		}
		r.head = n
	} else {
		n.prev, n.next = before, before.next
		if before.next != nil {
			before.next.prev = n
		} else {
			r.tail = n
		}
		before.next = n
	}
	r.brk = r.scanBreak(r.head.next)
	return n
}
