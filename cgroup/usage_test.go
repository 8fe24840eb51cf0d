package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseCPUStatFullTellsWhetherThrottlingIsMeasured(t *testing.T) {
	withCPU := "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 40\nnr_throttled 3\nthrottled_usec 20\nnr_bursts 0\nburst_usec 0\n"
	got, err := parseCPUStat(strings.NewReader(withCPU))
	want := CPUStat{Stat: Stat{CPU: 1500 * time.Microsecond, User: time.Millisecond, System: 500 * time.Microsecond, Throttled: 20 * time.Microsecond}, NrThrottled: 3, Throttling: true}
	if err != nil || got != want {
		t.Fatalf("with the cpu controller = %+v, %v; want %+v", got, err, want)
	}
	got, err = parseCPUStat(strings.NewReader("usage_usec 3\nuser_usec 2\nsystem_usec 1\nnice_usec 0\n"))
	want = CPUStat{Stat: Stat{CPU: 3 * time.Microsecond, User: 2 * time.Microsecond, System: time.Microsecond}}
	if err != nil || got != want {
		t.Fatalf("without the cpu controller = %+v, %v; want %+v", got, err, want)
	}
	if _, err := parseCPUStat(strings.NewReader("usage_usec x\n")); !errors.Is(err, ErrInvalidFormat) {
		t.Fatalf("bad value: error %v, want ErrInvalidFormat", err)
	}
}

func TestParsePressure(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Pressure
		wantErr bool
	}{
		{name: "some and full", in: "some avg10=2.56 avg60=1.07 avg300=3.90 total=1874916958\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=12\n",
			want: Pressure{Some: 1874916958 * time.Microsecond, Full: 12 * time.Microsecond, HasFull: true}},
		{name: "before Linux 5.13 there is no full line", in: "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n", want: Pressure{Some: 7 * time.Microsecond}},
		{name: "unknown lines are ignored", in: "some total=1\nlater x=1\n", want: Pressure{Some: time.Microsecond}},
		{name: "some is required", in: "full avg10=0.00 total=3\n", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "no total", in: "some avg10=0.00\n", wantErr: true},
		{name: "bad total", in: "some total=-1\n", wantErr: true},
		{name: "not key=value", in: "some avg10 total=1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePressure(strings.NewReader(tt.in))
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidFormat) {
					t.Fatalf("parsePressure(%q) error = %v, want ErrInvalidFormat", tt.in, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parsePressure(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	in := "cpu  797993 2187 180422 819669 6252 10 2294 27684 5 0\n" +
		"cpu0 397045 1055 87422 416544 1822 0 297 13854 0 0\n" +
		"cpu1 400948 1132 92999 403125 4429 10 1997 13830 5 0\n" +
		"intr 1 2 3\nctxt 99\nbtime 1700000000\nprocesses 5\nprocs_running 1\nprocs_blocked 0\nsoftirq 1 2\n"
	got, err := parseProcStat(strings.NewReader(in), 100)
	// user + nice + system + irq + softirq + steal; not idle, iowait or guest (part of user).
	busy := time.Duration(797993+2187+180422+10+2294+27684) * 10 * time.Millisecond
	cpu0 := time.Duration(397045+1055+87422+0+297+13854) * 10 * time.Millisecond
	cpu1 := time.Duration(400948+1132+92999+10+1997+13830) * 10 * time.Millisecond
	if err != nil || !reflect.DeepEqual(got, MachineCPU{Busy: busy, Online: 2, PerCPU: map[int]time.Duration{0: cpu0, 1: cpu1}}) {
		t.Fatalf("parseProcStat = %+v, %v; want busy %v on 2 CPUs", got, err, busy)
	}
	got, err = parseProcStat(strings.NewReader("cpu 1 0 1 5 0 0 0\ncpu0 1 0 1 5 0 0 0\n"), 1000)
	if err != nil || got.Busy != 2*time.Millisecond || got.Online != 1 || got.PerCPU[0] != 2*time.Millisecond {
		t.Fatalf("parseProcStat(old kernel, HZ 1000) = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2 3\n", "cpu 1 x 3 4 5 6 7 8\n"} {
		if _, err := parseProcStat(strings.NewReader(bad), 100); !errors.Is(err, ErrInvalidFormat) {
			t.Errorf("parseProcStat(%q) error = %v, want ErrInvalidFormat", bad, err)
		}
	}
}

// The machine's own /proc/stat parses, and its busy time does not go backwards.
func TestReadMachineCPUOnThisHost(t *testing.T) {
	a, err := ReadMachineCPU()
	if err != nil {
		t.Fatal(err)
	}
	if a.Online < 1 || a.Busy <= 0 {
		t.Fatalf("ReadMachineCPU = %+v; want a CPU online and busy time", a)
	}
	b, err := ReadMachineCPU()
	if err != nil || b.Busy < a.Busy {
		t.Fatalf("second reading %+v, %v; first %+v", b, err, a)
	}
	if hz := ClockTicks(); hz <= 0 {
		t.Fatalf("ClockTicks() = %d", hz)
	}
}

func TestReadPressureSaysWhenThereIsNoPSI(t *testing.T) {
	dir := t.TempDir() // a directory with no cpu.pressure: a kernel without PSI
	if _, err := ReadPressure(dir); !errors.Is(err, ErrNoPSI) {
		t.Fatalf("ReadPressure(no file) error = %v, want ErrNoPSI", err)
	}
	if _, err := ReadPressure(filepath.Join(dir, "gone")); errors.Is(err, ErrNoPSI) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadPressure(missing cgroup) error = %v, want not-exist, not ErrNoPSI", err)
	}
	if err := os.WriteFile(filepath.Join(dir, cpuPressureFile), []byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := ReadPressure(dir); err != nil || p != (Pressure{Some: 42 * time.Microsecond}) {
		t.Fatalf("ReadPressure = %+v, %v", p, err)
	}
	if err := os.WriteFile(filepath.Join(dir, cpuStatFile), []byte("usage_usec 9\nuser_usec 5\nsystem_usec 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := ReadCPUStat(dir); err != nil || s.CPU != 9*time.Microsecond || s.Throttling {
		t.Fatalf("ReadCPUStat = %+v, %v", s, err)
	}
}
