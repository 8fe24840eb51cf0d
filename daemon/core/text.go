package core

import "strconv"

// String renders d as Go's time.Duration does ("1h2m3.5s", "250ms"), so
// that logs read the same with or without the time package.
func (d Duration) String() string {
	if d < 0 {
		return "-" + (-d).String()
	}
	if d < Second {
		switch {
		case d == 0:
			return "0s"
		case d < 1000:
			return strconv.FormatInt(int64(d), 10) + "ns"
		case d < Millisecond:
			return fraction(int64(d), 1000) + "µs"
		}
		return fraction(int64(d), int64(Millisecond)) + "ms"
	}
	s := fraction(int64(d%Minute), int64(Second)) + "s"
	if d < Minute {
		return s
	}
	s = strconv.FormatInt(int64(d/Minute%60), 10) + "m" + s
	if d < Hour {
		return s
	}
	return strconv.FormatInt(int64(d/Hour), 10) + "h" + s
}

// fraction is n/unit with the decimals it needs, none if it needs none.
func fraction(n, unit int64) string {
	s := strconv.FormatInt(n/unit, 10)
	rest := n % unit
	if rest == 0 {
		return s
	}
	digits := len(strconv.FormatInt(unit, 10)) - 1
	frac := strconv.FormatInt(rest, 10)
	for len(frac) < digits {
		frac = "0" + frac
	}
	for frac[len(frac)-1] == '0' {
		frac = frac[:len(frac)-1]
	}
	return s + "." + frac
}

// durString renders a flag's duration as the user would write it: "1h",
// "1h30m", "30s".
func durString(d Duration) string {
	s := d.String()
	for _, suf := range []string{"m0s", "h0m"} {
		for len(s) > len(suf) && s[len(s)-len(suf):] == suf {
			s = s[:len(s)-2]
		}
	}
	return s
}

// agoString renders d for messages: "45s", "3m", "2h5m", "3d".
func agoString(d Duration) string {
	switch {
	case d < Minute:
		return ((d + Second/2) / Second * Second).String()
	case d < Hour:
		return strconv.FormatInt(int64(d/Minute), 10) + "m"
	case d < 24*Hour:
		s := strconv.FormatInt(int64(d/Hour), 10) + "h"
		if m := d % Hour / Minute; m > 0 {
			s += strconv.FormatInt(int64(m), 10) + "m"
		}
		return s
	}
	return strconv.FormatInt(int64(d/(24*Hour)), 10) + "d"
}
