package runner

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseTimeout parses a waiting timeout: a Go duration ("1m30s", "250ms") or
// a plain number of seconds ("30", "2.5"). Zero means no timeout. Negative,
// empty, non-finite or out-of-range values fail with ErrBadTimeout.
func ParseTimeout(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("%w: empty", ErrBadTimeout)
	}
	var d time.Duration
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f*float64(time.Second) > math.MaxInt64 {
			return 0, fmt.Errorf("%w: %q: want a duration such as 30s, 2m or 1h30m, or a number of seconds", ErrBadTimeout, s)
		}
		d = time.Duration(f * float64(time.Second))
		if d == 0 && f > 0 {
			d = 1 // a positive timeout never rounds down to "forever"
		}
	} else {
		d, err = time.ParseDuration(s)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%w: %q: want a duration such as 30s, 2m or 1h30m, or a number of seconds", ErrBadTimeout, s)
		}
	}
	return d, nil
}

// timeoutMS converts a timeout to the protocol's milliseconds, rounding up so
// that a positive timeout never becomes 0 ("never").
func timeoutMS(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
