package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/internal/atomicfile"
	"github.com/perflock/perflock/lockq"
)

// A job record keeps, for a running job, what a restarted perflockd cannot
// read from the job's cgroup or unit name (which say only x or s and the
// ticket): its mode with a group id, its resources, key, --governor, owner
// and command. It is written once the job is placed, as RunDir/jobs/N.json,
// and removed with the lease.
type jobRecord struct {
	Mode        string   `json:"mode"`
	Resources   []string `json:"resources"`
	Preemptible bool     `json:"preemptible,omitempty"`
	UID         uint32   `json:"uid"`
	ClientPID   int      `json:"client_pid,omitempty"`
	Command     []string `json:"command,omitempty"`
	Key         string   `json:"key,omitempty"`
	Governor    string   `json:"governor,omitempty"`
}

func (s *server) recordPath(t lockq.Ticket) string {
	return filepath.Join(s.cfg.RunDir, "jobs", strconv.FormatUint(uint64(t), 10)+".json")
}

// saveRecord writes j's record, for a driver whose jobs a restarted daemon
// adopts; a failure is logged: the job runs all the same.
func (s *server) saveRecord(j *job) {
	if _, ok := s.drv.(adopter); !ok {
		return
	}
	r := jobRecord{Mode: j.mode.String(), Resources: j.resources, Preemptible: j.preemptible, UID: j.uid,
		ClientPID: j.clientPID, Command: j.command, Key: j.key}
	if j.gov != governor.None {
		r.Governor = j.gov.String()
	}
	b, err := json.Marshal(r)
	if err == nil {
		p := s.recordPath(j.ticket)
		if err = os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
			err = atomicfile.WriteFile(p, b, 0o600)
		}
	}
	if err != nil {
		s.log.Warn("saving the job's record; after a restart it is adopted as x or s on cpu only", "job", j.name, "err", err)
		return
	}
	j.recorded = true
}

// dropRecord removes j's record once its lease ended.
func (s *server) dropRecord(j *job) {
	if !j.recorded {
		return
	}
	if err := os.Remove(s.recordPath(j.ticket)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("removing the job's record", "job", j.name, "err", err)
	}
}

// loadRecords reads the records an earlier daemon left, by ticket. A record
// that cannot be read is reported and skipped.
func (s *server) loadRecords() map[lockq.Ticket]jobRecord {
	dir := filepath.Join(s.cfg.RunDir, "jobs")
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
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
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

// fromRecord gives an adopted job what its record says, if the record
// agrees with what the driver found (shared or not, the machine held).
func (j *job) fromRecord(r jobRecord) error {
	mode, err := lockq.ParseMode(r.Mode)
	if err != nil {
		return err
	}
	if (mode.Kind == lockq.Shared) != j.shared {
		return fmt.Errorf("record says %s, the driver %s", r.Mode, j.name)
	}
	if !slices.Contains(r.Resources, lockq.Machine) {
		return fmt.Errorf("record's resources %v lack %s", r.Resources, lockq.Machine)
	}
	gov, err := governor.ParseMode(r.Governor)
	if err != nil {
		return err
	}
	j.mode, j.resources, j.preemptible, j.key, j.gov = mode, r.Resources, r.Preemptible, r.Key, gov
	j.uid, j.clientPID, j.command = r.UID, r.ClientPID, r.Command
	return nil
}
