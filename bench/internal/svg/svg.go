// Package svg draws the benchmark charts: horizontal bar charts with optional
// min–max whiskers and a goal line, as standalone SVG with no dependencies.
package svg

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// Bar is one bar of a chart.
type Bar struct {
	Group  string  // bars of one group are drawn together under its name
	Label  string  // left of the bar
	Value  float64 // the bar's length
	Lo, Hi float64 // a whisker from Lo to Hi when Hi > Lo
	Text   string  // right of the bar; default: Value formatted
	Accent bool    // draw in the accent colour (perflock's own bars)
}

// Chart is a horizontal bar chart.
type Chart struct {
	Title     string
	Subtitle  string // a smaller second line
	Unit      string // the value axis' unit, e.g. "s" or "× idle"
	Bars      []Bar
	Goal      float64 // a dashed vertical line at this value when > 0
	GoalLabel string
	Max       float64 // the axis' end; 0: fit the data
}

const (
	width   = 760
	labelW  = 250
	rightW  = 110
	barH    = 20
	barGap  = 6
	groupH  = 22
	topH    = 58
	bottomH = 34
	accent  = "#1f6feb"
	plain   = "#8c959f"
)

// WriteSVG writes the chart as an SVG document.
func (c Chart) WriteSVG(w io.Writer) error {
	bw := bufio.NewWriter(w)
	max := c.Max
	if max <= 0 {
		for _, b := range c.Bars {
			max = math.Max(max, math.Max(b.Value, b.Hi))
		}
		max = math.Max(max, c.Goal)
		max = niceCeil(max * 1.05)
	}
	if max <= 0 || math.IsNaN(max) || math.IsInf(max, 0) {
		max = 1
	}
	plotW := float64(width - labelW - rightW)
	x := func(v float64) float64 {
		if math.IsNaN(v) || v < 0 {
			v = 0
		}
		return labelW + math.Min(v, max)/max*plotW
	}

	// Layout: rows and group headers.
	type row struct {
		y      float64
		header string
		bar    *Bar
	}
	var rows []row
	y := float64(topH)
	group := "\x00"
	for i := range c.Bars {
		b := &c.Bars[i]
		if b.Group != group {
			group = b.Group
			if group != "" {
				rows = append(rows, row{y: y, header: group})
				y += groupH
			}
		}
		rows = append(rows, row{y: y, bar: b})
		y += barH + barGap
	}
	plotBottom := y
	height := int(y) + bottomH

	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(bw, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	fmt.Fprintf(bw, `<text x="12" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", esc(c.Title))
	if c.Subtitle != "" {
		fmt.Fprintf(bw, `<text x="12" y="40" fill="#57606a">%s</text>`+"\n", esc(c.Subtitle))
	}
	// Grid and axis ticks.
	step := niceCeil(max / 5)
	for v := 0.0; v <= max*1.0001; v += step {
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#d0d7de" stroke-width="1"/>`+"\n", x(v), topH-6, x(v), plotBottom)
		fmt.Fprintf(bw, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#57606a">%s</text>`+"\n", x(v), plotBottom+14, esc(Format(v)))
	}
	if c.Unit != "" {
		fmt.Fprintf(bw, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#57606a">%s</text>`+"\n", labelW+plotW/2, plotBottom+28, esc(c.Unit))
	}
	for _, r := range rows {
		if r.bar == nil {
			fmt.Fprintf(bw, `<text x="12" y="%.1f" font-weight="bold" fill="#24292f">%s</text>`+"\n", r.y+15, esc(r.header))
			continue
		}
		b := r.bar
		fill := plain
		if b.Accent {
			fill = accent
		}
		fmt.Fprintf(bw, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", labelW-8, r.y+barH/2+4, esc(b.Label))
		bw0 := x(b.Value) - labelW
		if b.Value > 0 && bw0 < 1 {
			bw0 = 1 // a visible sliver for tiny values
		}
		fmt.Fprintf(bw, `<rect x="%d" y="%.1f" width="%.1f" height="%d" fill="%s"/>`+"\n", labelW, r.y, bw0, barH, fill)
		end := x(b.Value)
		if b.Hi > b.Lo {
			cy := r.y + barH/2
			fmt.Fprintf(bw, `<path d="M%.1f %.1fH%.1fM%.1f %.1fV%.1fM%.1f %.1fV%.1f" stroke="#24292f" stroke-width="1.2" fill="none"/>`+"\n",
				x(b.Lo), cy, x(b.Hi), x(b.Lo), cy-5, cy+5, x(b.Hi), cy-5, cy+5)
			end = math.Max(end, x(b.Hi))
		}
		text := b.Text
		if text == "" {
			text = Format(b.Value)
		}
		fmt.Fprintf(bw, `<text x="%.1f" y="%.1f">%s</text>`+"\n", end+6, r.y+barH/2+4, esc(text))
	}
	if c.Goal > 0 && c.Goal <= max {
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#cf222e" stroke-width="1.5" stroke-dasharray="5,4"/>`+"\n", x(c.Goal), topH-10, x(c.Goal), plotBottom)
		if c.GoalLabel != "" {
			fmt.Fprintf(bw, `<text x="%.1f" y="%d" fill="#cf222e" text-anchor="middle">%s</text>`+"\n", x(c.Goal), topH-12, esc(c.GoalLabel))
		}
	}
	fmt.Fprintln(bw, `</svg>`)
	return bw.Flush()
}

// Format prints a number with about three significant digits.
func Format(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "–"
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return trim(fmt.Sprintf("%.1f", v))
	case a >= 1:
		return trim(fmt.Sprintf("%.2f", v))
	default:
		return trim(fmt.Sprintf("%.3g", v))
	}
}

func trim(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
