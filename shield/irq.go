package shield

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/internal/cpuset"
)

// DefaultIRQRoot is where the kernel shows the interrupts.
const DefaultIRQRoot = "/proc/irq"

// IRQ is the backend that moves interrupts to the housekeeping CPUs: every
// /proc/irq/N/smp_affinity_list this process may write, and
// /proc/irq/default_smp_affinity, which new interrupts start with.
//
// It cannot move every interrupt. An IRQ whose file is read-only is
// skipped (and counted) at Save; one that refuses the mask when written,
// EIO for per-CPU interrupts and those whose affinity the kernel manages
// (the queues of NVMe and many network drivers), ENOSPC where the
// housekeeping CPUs run out of interrupt vectors, is left where it is and
// counted, without failing the shield. Report says how many. An IRQ freed
// in the meantime is skipped. irqbalance, where it runs, may move
// interrupts back during a run.
type IRQ struct {
	root string

	// write writes a file; tests replace it to fail.
	write func(path, value string) error

	lastReport
}

// IRQState is what IRQ saves: the affinity of every IRQ it will move, and
// default_smp_affinity where it may be written.
type IRQState struct {
	Default *cpuset.Set   `json:"default_smp_affinity,omitempty"`
	IRQs    []IRQAffinity `json:"irqs"`
	// Unwritable counts the IRQs skipped because their file is read-only.
	Unwritable int `json:"unwritable,omitempty"`
}

// IRQAffinity is one IRQ's CPUs.
type IRQAffinity struct {
	IRQ  int        `json:"irq"`
	CPUs cpuset.Set `json:"cpus"`
}

// NewIRQ returns the IRQ backend for the interrupts under root
// (DefaultIRQRoot when empty).
func NewIRQ(root string) *IRQ {
	if root == "" {
		root = DefaultIRQRoot
	}
	return &IRQ{root: root, write: writeAttr}
}

// Name is "irq".
func (q *IRQ) Name() string { return "irq" }

func (q *IRQ) affinityPath(irq int) string {
	return filepath.Join(q.root, strconv.Itoa(irq), "smp_affinity_list")
}

func (q *IRQ) defaultPath() string { return filepath.Join(q.root, "default_smp_affinity") }

// irqs lists the IRQ numbers under the root, in increasing order.
func (q *IRQ) irqs() ([]int, error) {
	es, err := os.ReadDir(q.root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errorf(ErrUnsupported, "shield: irq: no %s", q.root)
		}
		return nil, fmt.Errorf("shield: irq: %w", err)
	}
	var irqs []int
	for _, e := range es {
		if n, err := strconv.Atoi(e.Name()); err == nil && n >= 0 && e.IsDir() {
			irqs = append(irqs, n)
		}
	}
	slices.Sort(irqs)
	return irqs, nil
}

// Check reports ErrUnsupported where there is no IRQ folder, or no IRQ's
// affinity may be written (perflockd is not root).
func (q *IRQ) Check(ctx context.Context) error {
	irqs, err := q.irqs()
	if err != nil {
		return err
	}
	for _, n := range irqs {
		if writable(q.affinityPath(n)) {
			return nil
		}
	}
	return errorf(ErrUnsupported, "shield: irq: no IRQ affinity under %s may be written (%d IRQs; perflockd not root?)", q.root, len(irqs))
}

// Save reads the affinity of every IRQ whose file may be written, and
// default_smp_affinity.
func (q *IRQ) Save(ctx context.Context) (json.RawMessage, error) {
	irqs, err := q.irqs()
	if err != nil {
		return nil, err
	}
	var st IRQState
	for _, n := range irqs {
		path := q.affinityPath(n)
		if !writable(path) {
			st.Unwritable++
			continue
		}
		s, err := readAttr(path)
		if isGone(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("shield: irq: %w", err)
		}
		cpus, err := cpuset.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("shield: irq: %s: %w", path, err)
		}
		st.IRQs = append(st.IRQs, IRQAffinity{IRQ: n, CPUs: cpus})
	}
	if path := q.defaultPath(); writable(path) {
		s, err := readAttr(path)
		if err != nil {
			return nil, fmt.Errorf("shield: irq: %w", err)
		}
		cpus, err := cpuset.ParseHex(s)
		if err != nil {
			return nil, fmt.Errorf("shield: irq: %s: %w", path, err)
		}
		st.Default = &cpus
	}
	return json.Marshal(st)
}

// refused reports whether a write error is the kernel refusing this IRQ's
// new mask, rather than a failure of the shield.
func refused(err error) bool { return errors.Is(err, unix.EIO) || errors.Is(err, unix.ENOSPC) }

// Confine writes the housekeeping CPUs to default_smp_affinity and to
// every saved IRQ. IRQs that refuse the mask or are gone are counted, not
// errors; any other failed write is.
func (q *IRQ) Confine(ctx context.Context, saved json.RawMessage, housekeeping cpuset.Set) error {
	var st IRQState
	if err := q.decode(saved, &st); err != nil {
		return err
	}
	q.setReport("")
	if st.Default != nil {
		if err := q.write(q.defaultPath(), housekeeping.Hex()); err != nil {
			return fmt.Errorf("shield: irq: write %s to %s: %w", housekeeping.Hex(), q.defaultPath(), err)
		}
	}
	var moved int
	var refusedIRQs []int
	for _, a := range st.IRQs {
		err := q.write(q.affinityPath(a.IRQ), housekeeping.String())
		switch {
		case err == nil:
			moved++
		case refused(err):
			refusedIRQs = append(refusedIRQs, a.IRQ)
		case isGone(err):
		default:
			return fmt.Errorf("shield: irq: write %s to %s: %w", housekeeping, q.affinityPath(a.IRQ), err)
		}
	}
	r := fmt.Sprintf("%d IRQs moved to CPUs %s", moved, housekeeping)
	if len(refusedIRQs) > 0 {
		r += fmt.Sprintf(", %d refused (IRQ %s: per-CPU or kernel-managed, they stay where they are)", len(refusedIRQs), irqNames(refusedIRQs))
	}
	if st.Unwritable > 0 {
		r += fmt.Sprintf(", %d not writable", st.Unwritable)
	}
	q.setReport(r)
	return nil
}

// Restore writes back every saved IRQ's CPUs whose affinity differs from
// them (one that refused the mask is left alone), and default_smp_affinity.
func (q *IRQ) Restore(ctx context.Context, saved json.RawMessage) error {
	var st IRQState
	if err := q.decode(saved, &st); err != nil {
		return err
	}
	var errs []error
	for _, a := range st.IRQs {
		path := q.affinityPath(a.IRQ)
		cur, err := readAttr(path)
		if isGone(err) {
			continue
		}
		if err == nil {
			if c, perr := cpuset.Parse(cur); perr == nil && c.Equal(a.CPUs) {
				continue
			}
		}
		if err := q.write(path, a.CPUs.String()); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("shield: irq: write %s to %s: %w", a.CPUs, path, err))
		}
	}
	if st.Default != nil {
		if err := q.write(q.defaultPath(), st.Default.Hex()); err != nil {
			errs = append(errs, fmt.Errorf("shield: irq: write %s to %s: %w", st.Default.Hex(), q.defaultPath(), err))
		}
	}
	return errors.Join(errs...)
}

// decode reads a saved IRQState; an empty CPU set is not an affinity the
// kernel would have shown, so it is refused.
func (q *IRQ) decode(saved json.RawMessage, st *IRQState) error {
	if err := decode(q.Name(), saved, st); err != nil {
		return err
	}
	for _, a := range st.IRQs {
		if a.IRQ < 0 || a.CPUs.IsEmpty() {
			return fmt.Errorf("%w: irq: IRQ %d with CPUs %q", ErrState, a.IRQ, a.CPUs)
		}
	}
	if st.Default != nil && st.Default.IsEmpty() {
		return fmt.Errorf("%w: irq: an empty default_smp_affinity", ErrState)
	}
	return nil
}

var _ Reporter = (*IRQ)(nil)

// irqNames is for messages: "24, 25 and 3 more".
func irqNames(irqs []int) string {
	var b strings.Builder
	for i, n := range irqs {
		if i == 3 {
			fmt.Fprintf(&b, " and %d more", len(irqs)-3)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}
