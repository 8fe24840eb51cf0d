package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/perflock/perflock/bench/internal/stats"
	"github.com/perflock/perflock/proto"
)

// raiseNofile raises this process's open-file limit to at least want (up
// to the hard limit) and returns the soft limit it ends with. Go passes
// the raised limit on to the daemons this program starts.
func raiseNofile(want uint64) (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if r.Cur >= want {
		return r.Cur, nil
	}
	r.Cur = min(want, r.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("setrlimit: %w", err)
	}
	return r.Cur, nil
}

// waiter is one raw protocol client.
type waiter struct {
	c net.Conn
	r *proto.Reader
}

// dialAcquire connects, says hello, asks for mode and returns once the
// daemon answered the request with want (queued or granted).
func dialAcquire(sock, mode, want string) (*waiter, error) {
	c, err := net.DialTimeout("unix", sock, 30*time.Second)
	if err != nil {
		return nil, err
	}
	w := &waiter{c: c, r: proto.NewReader(c)}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if err := proto.Write(c, proto.Msg{Type: proto.THello, Version: proto.Version, Client: "bench"}); err != nil {
		c.Close()
		return nil, err
	}
	if m, err := w.r.Read(); err != nil || m.Type != proto.THello {
		c.Close()
		if err == nil && m.Type == proto.TError {
			return nil, &refused{code: m.Code, msg: m.Message}
		}
		return nil, fmt.Errorf("hello: %v %v", m.Type, err)
	}
	if err := proto.Write(c, proto.Msg{Type: proto.TAcquire, Mode: mode, Command: []string{"bench-waiter"}}); err != nil {
		c.Close()
		return nil, err
	}
	m, err := w.r.Read()
	if err != nil {
		c.Close()
		return nil, err
	}
	if m.Type == proto.TError {
		c.Close()
		return nil, &refused{code: m.Code, msg: m.Message}
	}
	if m.Type != want {
		c.Close()
		return nil, fmt.Errorf("acquire: daemon answered %q (%s %s), want %q", m.Type, m.Code, m.Message, want)
	}
	c.SetDeadline(time.Time{})
	return w, nil
}

// scale: many waiting clients on one daemon.
func (b *bench) scale(ctx context.Context, n int) error {
	if _, err := raiseNofile(uint64(n) + 1000); err != nil {
		return err
	}
	// A daemon of its own, so the figures are not those of earlier scenarios.
	d, err := b.daemonTagged(ctx, "", "freeze", "scale")
	if err != nil {
		return err
	}
	pid, err := d.pid()
	if err != nil {
		return err
	}
	rss0, err := rssKiB(pid, "VmRSS")
	if err != nil {
		return err
	}
	holder, err := dialAcquire(d.sock, "exclusive", proto.TGranted)
	if err != nil {
		return fmt.Errorf("scale: holder: %w", err)
	}
	defer holder.c.Close()

	progress("scale: connecting %d waiting clients", n)
	ws := make([]*waiter, n)
	var limit *refused
	limitAt := n
	var connectErr error
	t0 := time.Now()
	connect := func(from, to int) {
		var next atomic.Int64
		next.Store(int64(from))
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= to {
						return
					}
					w, err := dialAcquire(d.sock, "exclusive", proto.TQueued)
					var ref *refused
					mu.Lock()
					if errors.As(err, &ref) && ref.code == proto.CodeLimit {
						// The daemon's connection limits: stop there and
						// measure what it accepted.
						if limit == nil {
							limit, limitAt = ref, i
						}
						next.Store(int64(to))
					} else if err != nil && connectErr == nil {
						connectErr = fmt.Errorf("waiter %d: %w", i, err)
						next.Store(int64(to))
					}
					ws[i] = w
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	defer func() {
		for _, w := range ws {
			if w != nil {
				w.c.Close()
			}
		}
	}()
	// wholock with a short queue first: its answer is one protocol message.
	const short = 100
	connect(0, min(short, n))
	if connectErr != nil {
		return fmt.Errorf("scale: %w", connectErr)
	}
	shortList, shortErr := b.wholockTimes(ctx, d.sock, 5)
	if shortErr != nil {
		return shortErr
	}
	connect(min(short, n), n)
	enqueue := time.Since(t0)
	if connectErr != nil {
		return fmt.Errorf("scale: %w", connectErr)
	}
	// Keep the waiters that got in, as one dense slice.
	var kept []*waiter
	for _, w := range ws {
		if w != nil {
			kept = append(kept, w)
		}
	}
	asked := n
	if limit != nil {
		// Leave room for wholock's connection: drop a few waiters.
		for _, w := range kept[len(kept)-16:] {
			w.c.Close()
		}
		kept = kept[:len(kept)-16]
		progress("scale: the daemon refused waiter %d (%s: %s); measuring with %d", limitAt+1, limit.code, limit.msg, len(kept))
		time.Sleep(200 * time.Millisecond) // the daemon sees the closes
	}
	ws, n = kept, len(kept)
	progress("scale: %d queued in %v", n, enqueue.Round(time.Millisecond))
	time.Sleep(2 * time.Second) // let the daemon settle (status updates go out about once a second)
	rss, err := rssKiB(pid, "VmRSS")
	if err != nil {
		return err
	}

	// Readers: drain status updates; on granted, close and count.
	var granted atomic.Int64
	grantedAll := make(chan struct{})
	var lastGrant atomic.Int64
	for _, w := range ws {
		go func() {
			for {
				m, err := w.r.Read()
				if err != nil {
					return
				}
				if m.Type == proto.TGranted {
					w.c.Close()
					lastGrant.Store(time.Now().UnixNano())
					if granted.Add(1) == int64(n) {
						close(grantedAll)
					}
					return
				}
			}
		}()
	}

	// wholock --json with everyone waiting.
	fullList, fullErr := b.wholockTimes(ctx, d.sock, 3)
	hwm, _ := rssKiB(pid, "VmHWM")
	progress("scale: RSS %d KiB (idle %d KiB); wholock --json: %d waiting %v, %d waiting %v (%v)", rss, rss0,
		short, time.Duration(stats.Median(shortList.times)*1e9).Round(time.Millisecond), n, time.Duration(stats.Median(fullList.times)*1e9).Round(time.Millisecond), fullErr)

	// Grant throughput.
	t1 := time.Now()
	holder.c.Close()
	var grantErr error
	select {
	case <-grantedAll:
	case <-time.After(5 * time.Minute):
		grantErr = fmt.Errorf("only %d of %d granted after 5 minutes", granted.Load(), n)
	case <-ctx.Done():
		grantErr = ctx.Err()
	}
	grantWall := time.Duration(lastGrant.Load() - t1.UnixNano())
	if grantErr != nil {
		return fmt.Errorf("scale: %w", grantErr)
	}
	rate := float64(n) / grantWall.Seconds()
	progress("scale: %d grants in %v (%.0f/s)", n, grantWall.Round(time.Millisecond), rate)

	perWaiter := float64(rss-rss0) / float64(n)
	t := table{cols: []col{{"measure", false}, {"value", true}, {"note", false}}}
	mib := func(k int) string { return fmt.Sprintf("%.1f MiB", float64(k)/1024) }
	t.add("daemon RSS, idle", mib(rss0), "VmRSS of perflockd before any client")
	t.add(fmt.Sprintf("daemon RSS, 1 holder + %d waiting", n), mib(rss), fmt.Sprintf("%.1f KiB per waiter above idle", float64(rss-rss0)/float64(n)))
	t.add("daemon peak RSS (VmHWM)", mib(hwm), "")
	if n < asked {
		t.add(fmt.Sprintf("daemon RSS for %d waiters, **extrapolated**", asked), mib(rss0+int(perWaiter*float64(asked))), "idle RSS + the measured per-waiter cost × "+fmt.Sprint(asked))
	}
	t.add(fmt.Sprintf("enqueue %d (64 connecting at a time)", n), fsec(enqueue.Seconds()), fmt.Sprintf("%.0f requests/s", float64(n)/enqueue.Seconds()))
	t.add(fmt.Sprintf("`wholock --json`, %d waiting, median of 5", short), fms(stats.Median(shortList.times)), fmt.Sprintf("%d entries, %d bytes of JSON (%d per entry)", shortList.entries, shortList.bytes, shortList.bytes/max(1, shortList.entries)))
	if fullErr != nil {
		t.add(fmt.Sprintf("`wholock --json`, %d waiting", n), "**fails**", "`"+fullErr.Error()+"`")
	} else {
		t.add(fmt.Sprintf("`wholock --json`, %d waiting, median of 3", n), fms(stats.Median(fullList.times)), fmt.Sprintf("%d entries, %.1f MiB of JSON", fullList.entries, float64(fullList.bytes)/(1<<20)))
	}
	t.add(fmt.Sprintf("grant %d one by one", n), fsec(grantWall.Seconds()), fmt.Sprintf("%.0f grants/s (each client closes on grant)", rate))
	b.report.add(section{title: "4. Scale", body: []string{
		fmt.Sprintf("%d waiting clients as raw protocol connections from the bench program (hello, then acquire exclusive, see docs/protocol.md), "+
			"behind one exclusive holder that never places a job; the daemon runs with `--max-waiting 20000` (the per-user default is 128). "+
			"The bench process raised its RLIMIT_NOFILE to %d; perflockd's open-file limit was %s. "+
			"Then the holder closes and the waiters are granted one by one, each closing its connection when granted (a holder that is gone ends the lease, the none-driver path, no job is placed).",
			n, mustNofile(), fdLimit(pid)),
		limitNote(limit, limitAt, asked), listNote(fullErr, shortList),
		b.report.markdown(t),
	}})
	if n < asked {
		ext := float64(rss0+int(perWaiter*float64(asked))) / 1024
		b.report.goals = append(b.report.goals, goal{name: "scale", target: fmt.Sprintf("%d waiters in < %d MiB", asked, scaleGoalMiB),
			measured: fmt.Sprintf("not reachable: the daemon refuses connection %d; %d waiters took %.1f MiB (≈ %.1f MiB extrapolated to %d)", limitAt+1, n, float64(rss)/1024, ext, asked),
			verdict:  "**missed** (limit)",
			why: "perflockd caps connections at 4096 in all and 1024 per user (daemon.Config.MaxConns, MaxConnsPerUser) and has no flag to raise them, " +
				"so 10,000 waiters of one user cannot be had; the memory figure is extrapolated from the waiters it accepted."})
	} else {
		b.report.goals = append(b.report.goals, goalLE("scale", fmt.Sprintf("%d waiters in < %d MiB", n, scaleGoalMiB), float64(rss)/1024, scaleGoalMiB, func(v float64) string {
			return fmt.Sprintf("%.1f MiB RSS", v)
		}, "the daemon keeps per-waiter state: the connection, the request, the queue entry (a waiting connection has no goroutine and no read buffer: it is parked in an epoll set)."))
	}
	return nil
}

func mustNofile() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return r.Cur
}

// refused is the daemon's error answer to a hello or a request.
type refused struct{ code, msg string }

func (r *refused) Error() string { return r.code + ": " + r.msg }

// limitNote explains, on the page, a connection limit the daemon hit.
func limitNote(r *refused, at, asked int) string {
	if r == nil {
		return ""
	}
	return fmt.Sprintf("**The daemon refused connection %d of the %d asked for** (`%s: %s`), although the bench daemon runs with "+
		"`--max-conns` and `--max-conns-per-user` above the clients asked for: see the daemon's log. "+
		"The figures below are for the waiters it accepted; the 10,000-waiter memory is extrapolated.", at+1, asked, r.code, r.msg)
}

// listing is what wholockTimes measured.
type listing struct {
	times          []float64
	bytes, entries int
}

// wholockTimes runs `wholock --json` k times and times each.
func (b *bench) wholockTimes(ctx context.Context, sock string, k int) (listing, error) {
	var l listing
	for range k {
		c := b.cmd(ctx, "wholock", "--socket", sock, "--json")
		var stderr strings.Builder
		c.Stderr = &stderr
		t0 := time.Now()
		out, err := c.Output()
		if err != nil {
			return l, fmt.Errorf("wholock --json: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		l.times = append(l.times, time.Since(t0).Seconds())
		l.bytes = len(out)
		var entries []json.RawMessage
		if json.Unmarshal(out, &entries) == nil {
			l.entries = len(entries)
			continue
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(out, &obj) == nil {
			for _, v := range obj {
				if json.Unmarshal(v, &entries) == nil && len(entries) > l.entries {
					l.entries = len(entries)
				}
			}
		}
	}
	return l, nil
}

// listNote explains a failed listing of a long queue.
func listNote(err error, short listing) string {
	if err == nil {
		return ""
	}
	per := short.bytes / max(1, short.entries)
	return fmt.Sprintf("**`wholock --json` fails with the long queue.** The daemon answers a list with one protocol message, and a message may be at most "+
		"65,536 bytes (proto.MaxMessage); at about %d bytes per entry the listing stops working at roughly %d entries: proto.Encode returns ErrTooLong, "+
		"the daemon closes the connection and wholock reports the daemon unavailable (exit 69). A listing needs to be streamed (one message per entry, or pages).",
		per, 65536/max(1, per))
}

// scaleGoalMiB is the goal for the daemon's RSS with the scale scenario's
// waiters.
const scaleGoalMiB = 64
