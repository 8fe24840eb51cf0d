package stats

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, c := range []struct{ p, want float64 }{
		{0, 1}, {50, 3}, {100, 5}, {25, 2}, {90, 4.6}, {-3, 1}, {120, 5},
	} {
		if got := Percentile(xs, c.p); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if xs[0] != 5 {
		t.Error("Percentile sorted its input in place")
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("Percentile of nothing is not NaN")
	}
	if got := Median([]float64{1, 2, 3, 10}); got != 2.5 {
		t.Errorf("Median = %v, want 2.5", got)
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize([]float64{2, 4, 4, 4, 5, 5, 7, 9})
	if s.N != 8 || s.Min != 2 || s.Max != 9 || s.Median != 4.5 || s.Mean != 5 {
		t.Errorf("Summarize = %+v", s)
	}
	if math.Abs(s.CV-0.4) > 1e-9 { // population sd 2, mean 5
		t.Errorf("CV = %v, want 0.4", s.CV)
	}
	h := s.Scale(0.5)
	if h.Median != 2.25 || h.Max != 4.5 || h.CV != s.CV {
		t.Errorf("Scale = %+v", h)
	}
	if e := Summarize(nil); !math.IsNaN(e.Median) || e.N != 0 {
		t.Errorf("Summarize(nil) = %+v", e)
	}
}

func TestSeconds(t *testing.T) {
	got := Seconds([]time.Duration{time.Second, 250 * time.Millisecond})
	if got[0] != 1 || got[1] != 0.25 {
		t.Errorf("Seconds = %v", got)
	}
}
