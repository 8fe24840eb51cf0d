package daemon

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/internal/atomicfile"
	"github.com/perflock/perflock/lockq"
)

// A job record keeps, for a running job, what a restarted perflockd cannot
// read from the job's cgroup or unit name (which say only x or s and the
// ticket): its mode with a group id, its resources, key, --governor,
// owner, command and runtime limit; and its first process, by which a job
// without a cgroup (named locks, the none driver) is adopted. It is
// written once the job is placed, as RunDir/jobs/N.json, and removed with
// the lease.
type jobRecord struct {
	Mode        string   `json:"mode"`
	Resources   []string `json:"resources"`
	Preemptible bool     `json:"preemptible,omitempty"`
	UID         uint32   `json:"uid"`
	ClientPID   int      `json:"client_pid,omitempty"`
	// PID and PIDStart name the job's first process (its start time in
	// clock ticks since boot): a job without a cgroup is adopted by it.
	PID      int      `json:"pid,omitempty"`
	PIDStart uint64   `json:"pid_start,omitempty"`
	Command  []string `json:"command,omitempty"`
	Key      string   `json:"key,omitempty"`
	Governor string   `json:"governor,omitempty"`
	// MaxRuntimeMS and PlacedUnixMS: the job is stopped at placed + max
	// runtime, by a restarted daemon too.
	MaxRuntimeMS int64 `json:"max_runtime_ms,omitempty"`
	PlacedUnixMS int64 `json:"placed_unix_ms,omitempty"`
	// Bind is the cgroup a bound lease is bound to (a scheduler's job), by
	// which it is adopted; Owner the user shown for it.
	Bind  string `json:"bind,omitempty"`
	Owner string `json:"owner,omitempty"`
}

func (s *server) recordPath(t lockq.Ticket) string {
	return filepath.Join(s.cfg.RunDir, "jobs", strconv.FormatUint(uint64(t), 10)+".json")
}

// saveRecord writes a job's record; a failure is logged: the job runs
// all the same.
func (s *server) saveRecord(t lockq.Ticket, rec core.Record) {
	r := jobRecord{Mode: rec.Mode.String(), Resources: rec.Resources, Preemptible: rec.Preemptible, UID: rec.UID,
		ClientPID: rec.ClientPID, Command: rec.Command, Key: rec.Key, Governor: rec.Governor,
		MaxRuntimeMS: int64(rec.MaxRuntime / core.Millisecond), PlacedUnixMS: wall(rec.Placed).UnixMilli(),
		Bind: rec.Bind, Owner: rec.Owner}
	if rec.PID > 0 {
		start := rec.PIDStart // known when the client placed itself
		if start == 0 {
			start, _ = procStart(rec.PID)
		}
		if start != 0 {
			r.PID, r.PIDStart = rec.PID, start
		}
	}
	b, err := json.Marshal(r)
	if err == nil {
		p := s.recordPath(t)
		if err = os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
			err = checkOwnDir(filepath.Dir(p))
		}
		if err == nil {
			err = atomicfile.Replace(p, b, 0o600)
		}
	}
	if err != nil {
		s.log.Warn("saving the job's record; after a restart it is adopted as x or s on cpu only", "ticket", t, "err", err)
	}
}

// dropRecord removes a job's record once its lease ended.
func (s *server) dropRecord(t lockq.Ticket) {
	if err := os.Remove(s.recordPath(t)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("removing the job's record", "ticket", t, "err", err)
	}
}

// loadRecords reads the records an earlier daemon left, by ticket. A record
// that cannot be read is reported and skipped.
func (s *server) loadRecords() map[lockq.Ticket]jobRecord {
	dir := filepath.Join(s.cfg.RunDir, "jobs")
	if err := checkOwnDir(dir); errors.Is(err, errUntrusted) {
		s.log.Warn("not reading the job records of an earlier perflockd: their folder is not perflockd's own", "err", err)
		return nil
	}
	es, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("reading the job records of an earlier perflockd", "err", err)
		}
		return nil
	}
	out := make(map[lockq.Ticket]jobRecord)
	for _, e := range es {
		n, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), ".json"), 10, 64)
		if err != nil || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var r jobRecord
		b, err := readStateFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, errUntrusted) {
			s.log.Warn("removing a job record that is not perflockd's own", "file", e.Name(), "err", err)
			os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil {
			s.log.Warn("skipping a job record that cannot be read", "file", e.Name(), "err", err)
			continue
		}
		out[lockq.Ticket(n)] = r
	}
	return out
}

// coreRecord is a record as the core takes it, or nil when it cannot be
// read (it is removed; the job is adopted from what its driver says).
func (s *server) coreRecord(t lockq.Ticket, r jobRecord) *core.Record {
	mode, err := lockq.ParseMode(r.Mode)
	if err == nil {
		_, err = governor.ParseMode(r.Governor)
	}
	if err != nil {
		s.log.Warn("ignoring and removing the job's record", "ticket", t, "err", err)
		os.Remove(s.recordPath(t))
		return nil
	}
	rec := &core.Record{Mode: mode, Resources: r.Resources, Preemptible: r.Preemptible, UID: r.UID,
		User: s.userName(r.UID), ClientPID: r.ClientPID, PID: r.PID, Command: r.Command, Key: r.Key, Governor: r.Governor,
		MaxRuntime: msDuration(r.MaxRuntimeMS), Bind: r.Bind, Owner: r.Owner}
	if r.PlacedUnixMS > 0 {
		rec.Placed = core.Time(r.PlacedUnixMS) * core.Time(core.Millisecond)
	}
	return rec
}
