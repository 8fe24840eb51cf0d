package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadGaps(t *testing.T) {
	f := filepath.Join(t.TempDir(), "stamps")
	// Out of order, as concurrent jobs append them; the third overlaps the second.
	os.WriteFile(f, []byte("3000000000 3100000000\n1000000000 1500000000\n1600000000 2000000000\n1900000000 2100000000\n"), 0o644)
	gaps, overlaps, err := readGaps(f)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{0.1, -0.1, 0.9}
	if len(gaps) != len(want) || overlaps != 1 {
		t.Fatalf("gaps %v overlaps %d, want %v and 1", gaps, overlaps, want)
	}
	for i := range want {
		if d := gaps[i] - want[i]; d > 1e-9 || d < -1e-9 {
			t.Errorf("gap %d = %v, want %v", i, gaps[i], want[i])
		}
	}
	os.WriteFile(f, []byte("12 x\n"), 0o644)
	if _, _, err := readGaps(f); err == nil {
		t.Error("a bad line was accepted")
	}
}

func TestHelperModes(t *testing.T) {
	f := filepath.Join(t.TempDir(), "out")
	if ok, err := helperMain([]string{modeStamp, f}); !ok || err != nil {
		t.Fatalf("stamp: %v %v", ok, err)
	}
	if ok, err := helperMain([]string{modeWork, "2", "1000", f + "w"}); !ok || err != nil {
		t.Fatalf("work: %v %v", ok, err)
	}
	if _, n, err := readWork(f + "w"); err != nil || n <= 0 {
		t.Errorf("work wrote %d, %v", n, err)
	}
	if ok, _ := helperMain([]string{"-only", "x"}); ok {
		t.Error("a flag was taken for a helper mode")
	}
}
