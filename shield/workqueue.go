package shield

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/perflock/perflock/internal/cpuset"
)

// DefaultWorkqueueMask is the CPU mask of the kernel's unbound workqueues.
const DefaultWorkqueueMask = "/sys/devices/virtual/workqueue/cpumask"

// Workqueue is the backend that moves unbound kernel work (writeback,
// crypto, many drivers' deferred work) to the housekeeping CPUs, through
// the unbound workqueue cpumask (Linux 4.2 and later). Per-CPU workqueues
// (kworker/N:M) stay on their CPUs: nothing can move them.
type Workqueue struct {
	path string

	// write writes a file; tests replace it to fail.
	write func(path, value string) error
}

// WorkqueueState is what Workqueue saves: the mask as requested.
type WorkqueueState struct {
	CPUs cpuset.Set `json:"cpumask"`
}

// NewWorkqueue returns the Workqueue backend for the mask file at path
// (DefaultWorkqueueMask when empty).
func NewWorkqueue(path string) *Workqueue {
	if path == "" {
		path = DefaultWorkqueueMask
	}
	return &Workqueue{path: path, write: writeAttr}
}

// Name is "workqueue".
func (w *Workqueue) Name() string { return "workqueue" }

// Check reports ErrUnsupported where the mask file is missing or may not
// be written.
func (w *Workqueue) Check(ctx context.Context) error {
	if _, err := os.Stat(w.path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errorf(ErrUnsupported, "shield: workqueue: no %s (Linux before 4.2?)", w.path)
		}
		return fmt.Errorf("shield: workqueue: %w", err)
	}
	if !writable(w.path) {
		return errorf(ErrUnsupported, "shield: workqueue: %s may not be written (perflockd not root?)", w.path)
	}
	return nil
}

// Save reads the mask as it was requested: cpumask_requested beside the
// mask where the kernel has it (6.x: the mask itself then shows it less
// the CPUs isolated at boot), else the mask.
func (w *Workqueue) Save(ctx context.Context) (json.RawMessage, error) {
	if err := w.Check(ctx); err != nil {
		return nil, err
	}
	path := w.path + "_requested"
	s, err := readAttr(path)
	if isGone(err) {
		path = w.path
		s, err = readAttr(path)
	}
	if err != nil {
		return nil, fmt.Errorf("shield: workqueue: %w", err)
	}
	cpus, err := cpuset.ParseHex(s)
	if err != nil {
		return nil, fmt.Errorf("shield: workqueue: %s: %w", path, err)
	}
	return json.Marshal(WorkqueueState{CPUs: cpus})
}

// Confine writes the housekeeping CPUs to the mask.
func (w *Workqueue) Confine(ctx context.Context, saved json.RawMessage, housekeeping cpuset.Set) error {
	if _, err := w.decode(saved); err != nil {
		return err
	}
	if err := w.write(w.path, housekeeping.Hex()); err != nil {
		return fmt.Errorf("shield: workqueue: write %s to %s: %w", housekeeping.Hex(), w.path, err)
	}
	return nil
}

// Restore writes the saved mask back.
func (w *Workqueue) Restore(ctx context.Context, saved json.RawMessage) error {
	st, err := w.decode(saved)
	if err != nil {
		return err
	}
	if err := w.write(w.path, st.CPUs.Hex()); err != nil {
		return fmt.Errorf("shield: workqueue: write %s to %s: %w", st.CPUs.Hex(), w.path, err)
	}
	return nil
}

func (w *Workqueue) decode(saved json.RawMessage) (WorkqueueState, error) {
	var st WorkqueueState
	if err := decode(w.Name(), saved, &st); err != nil {
		return st, err
	}
	if st.CPUs.IsEmpty() {
		return st, fmt.Errorf("%w: workqueue: an empty cpumask", ErrState)
	}
	return st, nil
}
