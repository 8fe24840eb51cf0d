package runner

import (
	"errors"
	"testing"
	"time"
)

func TestParseTimeoutAcceptsDurationsAndPlainSeconds(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30":    30 * time.Second,
		"2.5":   2500 * time.Millisecond,
		"0":     0,
		"1m30s": 90 * time.Second,
		"250ms": 250 * time.Millisecond,
		" 10m ": 10 * time.Minute,
		"1e-12": 1, // positive never rounds to "no timeout"
	} {
		got, err := ParseTimeout(in)
		if err != nil || got != want {
			t.Errorf("ParseTimeout(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestParseTimeoutRejectsBadValues(t *testing.T) {
	for _, in := range []string{"", "abc", "-1", "-5s", "10 minutes", "NaN", "inf", "1e300", "5x"} {
		if d, err := ParseTimeout(in); !errors.Is(err, ErrBadTimeout) {
			t.Errorf("ParseTimeout(%q) = %v, %v; want ErrBadTimeout", in, d, err)
		}
	}
}

func TestTimeoutMSRoundsUp(t *testing.T) {
	for d, want := range map[time.Duration]int64{0: 0, 1: 1, time.Millisecond: 1, 1500 * time.Microsecond: 2, time.Minute: 60000} {
		if got := timeoutMS(d); got != want {
			t.Errorf("timeoutMS(%v) = %d, want %d", d, got, want)
		}
	}
}
