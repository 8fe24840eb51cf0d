// Package governor pins the CPU frequency through cpufreq sysfs while an
// exclusive job runs, and puts it back after.
//
// A Pinner saves every CPU's scaling_governor, scaling_min_freq and
// scaling_max_freq to a state file before it changes anything, so that the
// settings can be restored after a crash: a restarted daemon that finds the
// file calls RestoreLeftover. The state file belongs in a folder that a
// reboot clears (/run), since a reboot resets cpufreq as well.
//
// The sysfs root is injectable, so that tests run against a fake tree.
package governor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/internal/atomicfile"
	"github.com/perflock/perflock/internal/ownfile"
)

// DefaultSysfs is where the kernel shows the CPUs.
const DefaultSysfs = "/sys/devices/system/cpu"

// DefaultStatePath is where a system daemon keeps the saved settings: under
// /run, which a reboot clears along with the pinned frequencies.
const DefaultStatePath = "/run/perflock/governor.json"

var (
	// ErrNoCpufreq is returned where the kernel offers no cpufreq (no
	// cpuN/cpufreq folder): most virtual machines, and machines whose CPU
	// has no frequency driver.
	ErrNoCpufreq = errors.New("governor: cpufreq is not available on this machine (no cpufreq driver: common in virtual machines)")
	// ErrMode is a mode that is not performance, none or a percentage.
	ErrMode = errors.New("governor: bad mode")
	// ErrUnsupported is a mode the cpufreq driver cannot do, such as
	// performance where no CPU offers that governor.
	ErrUnsupported = errors.New("governor: not supported by the cpufreq driver")
	// ErrPinned is Set while the frequency is pinned already.
	ErrPinned = errors.New("governor: already pinned (Restore first)")
	// ErrLeftover is Set while a state file of an earlier pin exists: call
	// RestoreLeftover first.
	ErrLeftover = errors.New("governor: a state file of an earlier pin exists (RestoreLeftover first)")
	// ErrState is a state file that cannot be read back.
	ErrState = errors.New("governor: bad state file")
)

// Mode is what Set does: nothing (None), the performance governor
// (Performance), or a fixed frequency (Percent).
type Mode struct {
	// Percent, when not 0, pins every CPU at this percentage (1 to 100)
	// of its cpuinfo_max_freq.
	Percent int
	// Performance selects the performance governor at the CPU's highest
	// frequency.
	Performance bool
}

// None leaves the frequency alone.
var None = Mode{}

// Performance is the performance governor at the highest frequency.
var Performance = Mode{Performance: true}

// ParseMode reads a mode: "performance", "none" (or ""), or a percentage
// of the highest frequency, "70" or "70%".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "none":
		return None, nil
	case "performance":
		return Performance, nil
	}
	n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	if err != nil || n < 1 || n > 100 {
		return None, fmt.Errorf("%w %q: want performance, none, or a percentage from 1 to 100", ErrMode, s)
	}
	return Mode{Percent: n}, nil
}

// String is the mode as ParseMode reads it.
func (m Mode) String() string {
	switch {
	case m.Performance:
		return "performance"
	case m.Percent != 0:
		return strconv.Itoa(m.Percent) + "%"
	}
	return "none"
}

// State is the state file: the settings before the pin, per cpufreq
// folder.
type State struct {
	Mode string     `json:"mode"`
	CPUs []CPUState `json:"cpus"`
}

// CPUState is one CPU's saved settings. Dir is its cpufreq folder relative
// to the sysfs root, such as cpu0/cpufreq.
type CPUState struct {
	Dir      string `json:"dir"`
	Governor string `json:"scaling_governor"`
	MinFreq  string `json:"scaling_min_freq"`
	MaxFreq  string `json:"scaling_max_freq"`
}

// A Pinner pins the frequency of every CPU and restores it. Its methods
// may be called from several goroutines.
type Pinner struct {
	sysfs, statePath string

	mu    sync.Mutex
	saved *State // while pinned

	// write writes a sysfs attribute; tests replace it to fail.
	write func(path, value string) error
}

// New returns a Pinner for the CPUs under sysfs (DefaultSysfs when empty)
// that saves their settings to statePath (DefaultStatePath when empty).
func New(sysfs, statePath string) *Pinner {
	if sysfs == "" {
		sysfs = DefaultSysfs
	}
	if statePath == "" {
		statePath = DefaultStatePath
	}
	return &Pinner{sysfs: sysfs, statePath: statePath, write: writeAttr}
}

// Pinned reports whether Set pinned the frequency and Restore has not put
// it back yet.
func (p *Pinner) Pinned() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.saved != nil
}

// Mode is the mode Set pinned (or Adopt took over), None when not pinned.
func (p *Pinner) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.saved == nil {
		return None
	}
	m, err := ParseMode(p.saved.Mode)
	if err != nil || m == None {
		// A state file of an older format: pinned all the same.
		return Performance
	}
	return m
}

// Check reports whether Set(mode) can work on this machine, changing
// nothing: ErrNoCpufreq without cpufreq, ErrUnsupported for a mode the
// driver cannot do, and an error wrapping fs.ErrPermission (or EROFS) when
// this process may not write the settings (it is not root, or sysfs is
// read-only). None always can.
func (p *Pinner) Check(mode Mode) error {
	if mode == None {
		return nil
	}
	dirs, err := p.cpufreqDirs()
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if _, _, err := p.plan(d, mode); err != nil {
			return err
		}
		for _, name := range []string{"scaling_governor", "scaling_min_freq", "scaling_max_freq"} {
			path := filepath.Join(p.sysfs, d, name)
			if err := unix.Access(path, unix.W_OK); err != nil {
				return fmt.Errorf("governor: cannot write %s: %w", path, err)
			}
		}
	}
	return nil
}

var cpuDir = regexp.MustCompile(`^cpu[0-9]+$`)

// cpufreqDirs lists the cpufreq folders, relative to the sysfs root, one
// per cpufreq policy (CPUs of one policy share it).
func (p *Pinner) cpufreqDirs() ([]string, error) {
	es, err := os.ReadDir(p.sysfs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: no %s", ErrNoCpufreq, p.sysfs)
		}
		return nil, fmt.Errorf("governor: %w", err)
	}
	var dirs []string
	seen := map[string]bool{}
	for _, e := range es {
		if !cpuDir.MatchString(e.Name()) {
			continue
		}
		rel := filepath.Join(e.Name(), "cpufreq")
		real, err := filepath.EvalSymlinks(filepath.Join(p.sysfs, rel))
		if err != nil {
			continue // no cpufreq for this CPU (or it is offline)
		}
		if !seen[real] {
			seen[real] = true
			dirs = append(dirs, rel)
		}
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("%w: no %s", ErrNoCpufreq, filepath.Join(p.sysfs, "cpu*", "cpufreq"))
	}
	slices.SortFunc(dirs, func(a, b string) int { return cpuNumber(a) - cpuNumber(b) })
	return dirs, nil
}

func cpuNumber(dir string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(filepath.Dir(dir), "cpu"))
	return n
}

// target is what one cpufreq folder is set to.
type target struct {
	dir                string
	governor, min, max string
}

// Set pins every CPU's frequency as mode says (None does nothing). It
// writes the current settings to the state file first; if a write then
// fails, it puts back what it changed and removes the state file. Set
// while pinned fails with ErrPinned, and while a state file exists with
// ErrLeftover.
func (p *Pinner) Set(ctx context.Context, mode Mode) error {
	if mode == None {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.saved != nil {
		return ErrPinned
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := os.Stat(p.statePath); err == nil {
		return fmt.Errorf("%w: %s", ErrLeftover, p.statePath)
	}
	dirs, err := p.cpufreqDirs()
	if err != nil {
		return err
	}
	st := &State{Mode: mode.String()}
	var targets []target
	for _, d := range dirs {
		cs, t, err := p.plan(d, mode)
		if err != nil {
			return err
		}
		st.CPUs = append(st.CPUs, cs)
		targets = append(targets, t)
	}
	if err := saveState(p.statePath, st); err != nil {
		return err
	}
	for i, t := range targets {
		err := ctx.Err()
		if err == nil {
			err = p.apply(t, st.CPUs[i].MinFreq)
		}
		if err != nil {
			// Put back all CPUs up to this one (this one may be half done).
			if rerr := p.restore(st.CPUs[:i+1]); rerr != nil {
				return errors.Join(err, fmt.Errorf("governor: roll back (settings kept in %s): %w", p.statePath, rerr))
			}
			return errors.Join(err, removeState(p.statePath))
		}
	}
	p.saved = st
	return nil
}

// plan reads one cpufreq folder: its settings to save, and its target.
func (p *Pinner) plan(dir string, mode Mode) (CPUState, target, error) {
	read := func(name string) (string, error) { return readAttr(filepath.Join(p.sysfs, dir, name)) }
	cs := CPUState{Dir: dir}
	var err error
	if cs.Governor, err = read("scaling_governor"); err != nil {
		return cs, target{}, err
	}
	if cs.MinFreq, err = read("scaling_min_freq"); err != nil {
		return cs, target{}, err
	}
	if cs.MaxFreq, err = read("scaling_max_freq"); err != nil {
		return cs, target{}, err
	}
	hw, err := read("cpuinfo_max_freq")
	if err != nil {
		return cs, target{}, err
	}
	hwMax, err := strconv.ParseInt(hw, 10, 64)
	if err != nil {
		return cs, target{}, fmt.Errorf("governor: %s: %w", filepath.Join(p.sysfs, dir, "cpuinfo_max_freq"), err)
	}
	govs, _ := read("scaling_available_governors")
	hasPerformance := slices.Contains(strings.Fields(govs), "performance")
	t := target{dir: dir, governor: cs.Governor}
	if mode.Performance {
		if !hasPerformance {
			return cs, target{}, fmt.Errorf("%w: %s offers governors %q, not performance", ErrUnsupported, filepath.Join(p.sysfs, dir), govs)
		}
		t.governor, t.min, t.max = "performance", cs.MinFreq, hw
		return cs, t, nil
	}
	// A percentage: min = max, under the performance governor where there
	// is one (any governor holds a frequency range of one).
	if hasPerformance {
		t.governor = "performance"
	}
	f := (hwMax*int64(mode.Percent) + 50) / 100
	if lo, err := read("cpuinfo_min_freq"); err == nil {
		if n, err := strconv.ParseInt(lo, 10, 64); err == nil {
			f = max(f, n)
		}
	}
	if avail, err := read("scaling_available_frequencies"); err == nil {
		f = nearest(f, avail)
	}
	t.min = strconv.FormatInt(f, 10)
	t.max = t.min
	return cs, t, nil
}

// nearest is the frequency in the list (kHz, space-separated) nearest to
// f, the higher one on a tie; f when the list has none.
func nearest(f int64, list string) int64 {
	best, bestDist := f, int64(-1)
	for _, s := range strings.Fields(list) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			continue
		}
		d := max(n-f, f-n)
		if bestDist < 0 || d < bestDist || (d == bestDist && n > best) {
			best, bestDist = n, d
		}
	}
	return best
}

// apply writes a target: the governor, then the frequency range in the
// order that never has min above max. curMin is the current minimum.
func (p *Pinner) apply(t target, curMin string) error {
	path := func(name string) string { return filepath.Join(p.sysfs, t.dir, name) }
	if err := p.write(path("scaling_governor"), t.governor); err != nil {
		return err
	}
	return p.setRange(t.dir, t.min, t.max, curMin)
}

func (p *Pinner) setRange(dir, lo, hi, curMin string) error {
	path := func(name string) string { return filepath.Join(p.sysfs, dir, name) }
	newMax, _ := strconv.ParseInt(hi, 10, 64)
	oldMin, _ := strconv.ParseInt(curMin, 10, 64)
	first, second := path("scaling_max_freq"), path("scaling_min_freq")
	firstV, secondV := hi, lo
	if newMax < oldMin {
		first, second = second, first
		firstV, secondV = secondV, firstV
	}
	if err := p.write(first, firstV); err != nil {
		return err
	}
	return p.write(second, secondV)
}

// Restore puts back the settings Set saved and removes the state file. It
// does nothing when not pinned. When a write fails, the state file stays,
// and Restore (or RestoreLeftover) may be called again.
func (p *Pinner) Restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.saved == nil {
		return nil
	}
	if err := p.restore(p.saved.CPUs); err != nil {
		return fmt.Errorf("%w (settings kept in %s)", err, p.statePath)
	}
	p.saved = nil
	return removeState(p.statePath)
}

// RestoreLeftover puts back the settings in a state file an earlier Pinner
// left (its daemon was killed or crashed while a job ran pinned), and
// removes the file. It reports whether there was one.
func (p *Pinner) RestoreLeftover() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, err := p.loadState()
	if st == nil || err != nil {
		return st != nil, err
	}
	if err := p.restore(st.CPUs); err != nil {
		return true, fmt.Errorf("%w (settings kept in %s)", err, p.statePath)
	}
	p.saved = nil
	return true, removeState(p.statePath)
}

// Adopt takes over the pin an earlier Pinner left in the state file, for a
// restarted daemon whose exclusive job still runs: the frequency stays
// pinned, and Restore puts back the settings saved before it. It reports
// whether there was a state file.
func (p *Pinner) Adopt() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.saved != nil {
		return false, ErrPinned
	}
	st, err := p.loadState()
	if st == nil || err != nil {
		return st != nil, err
	}
	p.saved = st
	return true, nil
}

// loadState reads the state file: nil if there is none.
func (p *Pinner) loadState() (*State, error) {
	// Only a file of its own: one someone else planted (a state folder
	// beside a socket in /tmp) would choose what a root daemon writes to
	// every CPU.
	b, err := ownfile.Read(p.statePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if errors.Is(err, ownfile.ErrUntrusted) {
		return &State{}, fmt.Errorf("%w: %w: check the CPU frequency settings, then remove it", ErrState, err)
	}
	if err != nil {
		return &State{}, fmt.Errorf("governor: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return &st, fmt.Errorf("%w %s: %w", ErrState, p.statePath, err)
	}
	for _, c := range st.CPUs {
		if !filepath.IsLocal(c.Dir) {
			return &st, fmt.Errorf("%w %s: folder %q", ErrState, p.statePath, c.Dir)
		}
	}
	return &st, nil
}

// restore writes saved settings back, trying every CPU even after a
// failure.
func (p *Pinner) restore(cpus []CPUState) error {
	var errs []error
	for _, c := range cpus {
		cur, err := readAttr(filepath.Join(p.sysfs, c.Dir, "scaling_min_freq"))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := p.apply(target{c.Dir, c.Governor, c.MinFreq, c.MaxFreq}, cur); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func readAttr(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("governor: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// writeAttr writes an existing sysfs attribute (never creating one).
func writeAttr(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("governor: %w", err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("governor: write %q to %s: %w", value, path, err)
	}
	return nil
}

// saveState writes the state file atomically: a temporary file, synced,
// renamed over it, and the folder synced.
func saveState(path string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("governor: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("governor: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("governor: save state: %w", err)
	}
	return nil
}

func removeState(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("governor: %w", err)
	}
	return nil
}
