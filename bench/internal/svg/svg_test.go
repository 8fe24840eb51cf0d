package svg

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strings"
	"testing"
)

func TestWriteSVGIsWellFormed(t *testing.T) {
	c := Chart{
		Title: "wait <fairness> & more", Subtitle: "sub", Unit: "s",
		Goal: 0.05, GoalLabel: "goal",
		Bars: []Bar{
			{Group: "A", Label: "perflock freeze", Value: 0.01, Lo: 0.005, Hi: 0.02, Accent: true},
			{Group: "A", Label: "flock(1)", Value: 4.4},
			{Group: "B", Label: "nan", Value: math.NaN()},
		},
	}
	var buf bytes.Buffer
	if err := c.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&buf)
	var texts []string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, buf.String())
		}
		if cd, ok := tok.(xml.CharData); ok {
			texts = append(texts, string(cd))
		}
	}
	all := strings.Join(texts, "|")
	for _, want := range []string{"wait <fairness> & more", "perflock freeze", "flock(1)", "4.4", "goal", "A", "B"} {
		if !strings.Contains(all, want) {
			t.Errorf("chart text lacks %q: %s", want, all)
		}
	}
}

func TestFormat(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 0.0123: "0.0123", 1.5: "1.5", 12.34: "12.3", 1234.5: "1234", 2: "2"} {
		if got := Format(v); got != want {
			t.Errorf("Format(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestNiceCeil(t *testing.T) {
	for v, want := range map[float64]float64{0.7: 1, 1.2: 2, 3: 5, 7: 10, 0.04: 0.05, 100: 100} {
		if got := niceCeil(v); math.Abs(got-want) > 1e-12 {
			t.Errorf("niceCeil(%v) = %v, want %v", v, got, want)
		}
	}
}
