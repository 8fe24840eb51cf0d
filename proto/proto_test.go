package proto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRoundTripOfEveryClientMessage(t *testing.T) {
	for _, m := range []Msg{
		{Type: THello, Version: Version, Client: "perfrun"},
		{Type: TAcquire, Mode: "group(7)", Resources: []string{"cpu", "net"}, Preemptible: false, Nonblock: true, TimeoutMS: 1500, Command: []string{"make", "bench"}},
		{Type: TPlace, PID: 42},
		{Type: TDone, Status: 3},
		{Type: TList},
		{Type: TWatch},
	} {
		b, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(b, []byte("\n")) || bytes.Count(b, []byte("\n")) != 1 {
			t.Fatalf("%s: not one line: %q", m.Type, b)
		}
		got, err := NewReader(bytes.NewReader(b)).Read()
		if err != nil {
			t.Fatalf("%s: %v", m.Type, err)
		}
		if got.Type != m.Type || got.Mode != m.Mode || got.PID != m.PID || got.TimeoutMS != m.TimeoutMS || strings.Join(got.Command, " ") != strings.Join(m.Command, " ") {
			t.Fatalf("round trip %+v -> %+v", m, got)
		}
	}
}

func TestReaderReadsSuccessiveMessagesAndStopsAtEOF(t *testing.T) {
	in := `{"type":"hello","version":1}` + "\n" + `{"type":"list"}` + "\n"
	r := NewReader(strings.NewReader(in))
	for _, want := range []string{THello, TList} {
		m, err := r.Read()
		if err != nil || m.Type != want {
			t.Fatalf("got %+v, %v; want %s", m, err, want)
		}
	}
	if _, err := r.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("at end: %v, want EOF", err)
	}
}

func TestReaderRefusesBadInput(t *testing.T) {
	long := `{"type":"hello","version":1,"client":"` + strings.Repeat("a", MaxMessage) + `"}` + "\n"
	for _, tc := range []struct {
		in   string
		want error
	}{
		{long, ErrTooLong},
		{strings.Repeat("x", MaxMessage+10), ErrTooLong},
		{`{"type":"hel`, ErrMalformed},
		{"not json\n", ErrMalformed},
		{`{"type":"hello","version":1} {"type":"list"}` + "\n", ErrMalformed},
		{`{}` + "\n", ErrMalformed},
		{`{"type":"hello"}` + "\n", ErrMalformed},
		{`{"type":"acquire","mode":"exclusive"}` + "\n", ErrMalformed},
		{`{"type":"acquire","mode":"exclusive","command":["x"],"resources":["a/b"]}` + "\n", ErrMalformed},
		{`{"type":"acquire","mode":"exclusive","command":["x"],"timeout_ms":-1}` + "\n", ErrMalformed},
		{`{"type":"acquire","command":["x"]}` + "\n", ErrMalformed},
		{`{"type":"place","pid":0}` + "\n", ErrMalformed},
		{`{"type":"error"}` + "\n", ErrMalformed},
		{`{"type":"grab"}` + "\n", ErrMalformed},
		{`{"type":7}` + "\n", ErrMalformed},
	} {
		_, err := NewReader(strings.NewReader(tc.in)).Read()
		if !errors.Is(err, tc.want) {
			in := tc.in
			if len(in) > 60 {
				in = in[:60] + "..."
			}
			t.Errorf("Read(%q) = %v, want %v", in, err, tc.want)
		}
	}
}

func TestLimitsOnAcquire(t *testing.T) {
	words := make([]string, MaxArgs+1)
	for i := range words {
		words[i] = "w"
	}
	res := make([]string, MaxResources+1)
	for i := range res {
		res[i] = "r" + strings.Repeat("x", i)
	}
	for _, m := range []Msg{
		{Type: TAcquire, Mode: "shared", Command: words},
		{Type: TAcquire, Mode: "shared", Command: []string{strings.Repeat("a", MaxArgBytes+1)}},
		{Type: TAcquire, Mode: "shared", Command: []string{"x"}, Resources: res},
		{Type: TAcquire, Mode: "shared", Command: []string{"x"}, Resources: []string{strings.Repeat("n", MaxNameBytes+1)}},
		{Type: TAcquire, Mode: "shared", Command: []string{"x"}, Resources: []string{""}},
	} {
		if err := m.Validate(); !errors.Is(err, ErrMalformed) {
			t.Errorf("Validate accepted an acquire over the limits: %v", err)
		}
	}
	if _, err := Encode(Msg{Type: TList, Message: strings.Repeat("m", MaxMessage)}); !errors.Is(err, ErrTooLong) {
		t.Errorf("Encode of an oversized message: %v", err)
	}
}

// FuzzDecode: no input makes the decoder panic, accept more than MaxMessage,
// or accept a message that fails validation.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","version":1,"client":"perfrun"}`,
		`{"type":"acquire","mode":"group(3)","resources":["cpu","net"],"command":["make","bench"],"timeout_ms":100}`,
		`{"type":"place","pid":12}`,
		`{"type":"list"}`,
		`{"type":"done","status":1}`,
		`{"type":"error","code":"invalid","message":"x"}`,
		`{"type":"acquire","mode":"exclusive","command":[]}`,
		`{"type":"acquire","mode":"exclusive","command":["./bench"],"governor":"70%"}`,
		"\x00\xff{",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if len(b) > MaxMessage {
			t.Fatalf("accepted %d bytes", len(b))
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid message: %v", err)
		}
		if _, err := Encode(m); err != nil && !errors.Is(err, ErrTooLong) {
			t.Fatalf("cannot re-encode an accepted message: %v", err)
		}
	})
}

// The keyed-job fields travel, need a key, and refuse negative durations;
// skipped is a known daemon message.
func TestKeyedAcquireAndSkipped(t *testing.T) {
	m := Msg{Type: TAcquire, Mode: "exclusive", Command: []string{"x"}, Key: "nightly", IfElapsedMS: 3600000, Replace: true, ExpireAfterMS: 7200000}
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"key":"nightly"`, `"if_elapsed_ms":3600000`, `"replace":true`, `"expire_after_ms":7200000`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	got, err := Decode(b)
	if err != nil || got.Key != m.Key || got.IfElapsedMS != m.IfElapsedMS || !got.Replace || got.ExpireAfterMS != m.ExpireAfterMS {
		t.Fatalf("round trip %+v -> %+v, %v", m, got, err)
	}
	for _, bad := range []Msg{
		{Type: TAcquire, Mode: "exclusive", Command: []string{"x"}, IfElapsedMS: 1},
		{Type: TAcquire, Mode: "exclusive", Command: []string{"x"}, Replace: true},
		{Type: TAcquire, Mode: "exclusive", Command: []string{"x"}, ExpireAfterMS: 1},
		{Type: TAcquire, Mode: "exclusive", Command: []string{"x"}, Key: "k", IfElapsedMS: -1},
		{Type: TAcquire, Mode: "exclusive", Command: []string{"x"}, Key: "a/b"},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrMalformed) {
			t.Errorf("Validate accepted %+v: %v", bad, err)
		}
	}
	if _, err := Decode([]byte(`{"type":"skipped","message":"k last completed successfully 3m ago (--if-elapsed 1h)"}`)); err != nil {
		t.Errorf("skipped: %v", err)
	}
}

// A report request and a report round-trip; a report without figures is malformed; absent
// figures stay absent.
func TestReportRoundTrip(t *testing.T) {
	b, err := Encode(Msg{Type: TAcquire, Mode: "exclusive", Command: []string{"x"}, Report: true})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := Decode(b); err != nil || !m.Report {
		t.Fatalf("acquire with report: %+v, %v", m, err)
	}
	busy, full := int64(900), int64(0)
	r := &Report{Job: "x-4", Driver: "cgroupfs", Policy: "freeze", WallUS: 1000, OnlineCPUs: 2, MachineBusyUS: &busy,
		JobCPU:      &ReportCPU{TotalUS: 700, UserUS: 600, SystemUS: 100},
		Outside:     &ReportOutside{CPUUS: 200, Share: 0.1},
		Pressure:    &ReportPressure{SomeUS: 5, FullUS: &full},
		Shared:      &ReportShared{FrozenJobs: 1, FrozenThroughout: true},
		Unavailable: map[string]string{"throttling": "no cpu controller"}}
	b, err = Encode(Msg{Type: TReport, Figures: r})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`"throttling":{`)) {
		t.Fatalf("an absent figure is encoded: %s", b)
	}
	m, err := Decode(b)
	if err != nil || m.Figures == nil {
		t.Fatalf("report: %+v, %v", m, err)
	}
	g := m.Figures
	if g.Job != "x-4" || *g.MachineBusyUS != 900 || *g.JobCPU != *r.JobCPU || *g.Outside != *r.Outside || g.Pressure.FullUS == nil ||
		*g.Shared != *r.Shared || g.Throttling != nil || g.Unavailable["throttling"] == "" {
		t.Fatalf("round trip %+v -> %+v", r, g)
	}
	if _, err := Decode([]byte(`{"type":"report"}`)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("report without figures: %v, want ErrMalformed", err)
	}
}

// governor travels in acquire and in list entries; Validate bounds its
// length and characters (the daemon parses what passes).
func TestGovernorField(t *testing.T) {
	for _, g := range []string{"performance", "70%", "none", "100", ""} {
		m := Msg{Type: TAcquire, Mode: "exclusive", Command: []string{"x"}, Governor: g}
		b, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil || got.Governor != g {
			t.Errorf("round trip of governor %q: %+v, %v", g, got, err)
		}
	}
	for _, g := range []string{strings.Repeat("p", MaxGovernorBytes+1), "perf ormance", "70%\n", "Performance", "../x"} {
		m := Msg{Type: TAcquire, Mode: "exclusive", Command: []string{"x"}, Governor: g}
		if err := m.Validate(); !errors.Is(err, ErrMalformed) {
			t.Errorf("Validate accepted governor %q: %v", g, err)
		}
	}
	b, err := Encode(Msg{Type: TList, Entries: []Entry{{Job: "x-1", Governor: "70%"}}})
	if err != nil || !bytes.Contains(b, []byte(`"governor":"70%"`)) {
		t.Errorf("list entry: %s, %v", b, err)
	}
}

// A reader lets go of its buffer only when nothing is buffered, and reads on
// after Idle as before.
func TestReaderIdleKeepsWhatIsBuffered(t *testing.T) {
	a, _ := Encode(Msg{Type: TDone, Status: 1})
	b, _ := Encode(Msg{Type: TDone, Status: 2})
	r := NewReader(strings.NewReader(string(a) + string(b)))
	if m, err := r.Read(); err != nil || m.Status != 1 {
		t.Fatalf("first: %+v %v", m, err)
	}
	if r.Buffered() == 0 {
		t.Fatal("the second message is not buffered")
	}
	r.Idle() // something is buffered: kept
	if m, err := r.Read(); err != nil || m.Status != 2 {
		t.Fatalf("second after Idle: %+v %v", m, err)
	}
	r.Idle()
	if r.Buffered() != 0 || r.br != nil {
		t.Fatal("an idle reader kept its buffer")
	}
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("after the stream: %v, want EOF", err)
	}
}
