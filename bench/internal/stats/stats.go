// Package stats summarises benchmark samples: medians, percentiles, spread.
package stats

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0…100) of xs by linear
// interpolation between the closest ranks; NaN for no samples.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if p <= 0 {
		return s[0]
	}
	if p >= 100 {
		return s[len(s)-1]
	}
	r := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(r))
	hi := int(math.Ceil(r))
	return s[lo] + (s[hi]-s[lo])*(r-float64(lo))
}

// Median is the 50th percentile.
func Median(xs []float64) float64 { return Percentile(xs, 50) }

// Summary is a sample's spread.
type Summary struct {
	N                     int
	Min, Median, P90, Max float64
	Mean, CV              float64 // CV: standard deviation / mean
}

// Summarize computes a Summary; the zero Summary (with NaNs) for no samples.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		nan := math.NaN()
		return Summary{Min: nan, Median: nan, P90: nan, Max: nan, Mean: nan, CV: nan}
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	mean := sum / float64(len(xs))
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	cv := math.NaN()
	if mean != 0 {
		cv = math.Sqrt(ss/float64(len(xs))) / mean
	}
	return Summary{
		N: len(xs), Min: Percentile(xs, 0), Median: Median(xs), P90: Percentile(xs, 90),
		Max: Percentile(xs, 100), Mean: mean, CV: cv,
	}
}

// Scale returns the summary with every location statistic multiplied by f
// (CV and N unchanged): a summary of seconds divided by a baseline, say.
func (s Summary) Scale(f float64) Summary {
	s.Min *= f
	s.Median *= f
	s.P90 *= f
	s.Max *= f
	s.Mean *= f
	return s
}

// Seconds converts durations to seconds.
func Seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}
