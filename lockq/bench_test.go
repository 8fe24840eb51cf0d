package lockq

import (
	"fmt"
	"testing"
)

// BenchmarkEnqueueGrantRelease measures one enqueue, one release and the
// grant it causes, with n exclusive requests waiting throughout. The cost
// per operation must not grow with n.
func BenchmarkEnqueueGrantRelease(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			q := New(Freeze)
			holder, _, _ := q.Enqueue(Request{Mode: ExclusiveMode()})
			for range n {
				q.Enqueue(Request{Mode: ExclusiveMode()})
			}
			for b.Loop() {
				q.Enqueue(Request{Mode: ExclusiveMode()})
				acts, err := q.Release(holder)
				if err != nil || len(acts) != 1 || acts[0].Kind != Grant {
					b.Fatalf("release: %v %v", acts, err)
				}
				holder = acts[0].Ticket
			}
		})
	}
}

// BenchmarkSharedStreamPastWaitingExclusive: n shared requests wait behind a
// waiting exclusive one while a shared holder comes and goes; each operation
// enqueues a shared request and cancels the oldest waiting one.
func BenchmarkSharedStreamBehindExclusive(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			q := New(Drain)
			q.Enqueue(Request{Mode: SharedMode()})
			q.Enqueue(Request{Mode: ExclusiveMode()})
			var oldest Ticket
			for i := range n {
				t, _, _ := q.Enqueue(Request{Mode: SharedMode()})
				if i == 0 {
					oldest = t
				}
			}
			for b.Loop() {
				q.Enqueue(Request{Mode: SharedMode()})
				if _, err := q.Cancel(oldest); err != nil {
					b.Fatal(err)
				}
				oldest++
			}
		})
	}
}
