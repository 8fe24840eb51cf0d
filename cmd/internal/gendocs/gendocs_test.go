package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// repoRoot is the repository root, from this package's folder.
const repoRoot = "../../.."

// The committed completions and manual pages are what the commands
// generate: `make docs` after changing a command's help.
func TestCommittedDocsAreCurrent(t *testing.T) {
	dir := t.TempDir()
	if err := Generate(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, d := range OwnedDirs {
		want := listDir(t, filepath.Join(dir, d))
		got := listDir(t, filepath.Join(repoRoot, d))
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s holds %q, want %q: run make docs", d, got, want)
			continue
		}
		for _, name := range want {
			fresh, err := os.ReadFile(filepath.Join(dir, d, name))
			if err != nil {
				t.Fatal(err)
			}
			committed, err := os.ReadFile(filepath.Join(repoRoot, d, name))
			if err != nil {
				t.Fatal(err)
			}
			if !SameExceptDate(committed, fresh) {
				t.Errorf("%s/%s is stale: run make docs (%s)", d, name, firstDiff(committed, fresh))
			}
		}
	}
}

// firstDiff describes the first line where the committed file differs.
func firstDiff(committed, fresh []byte) string {
	a, b := strings.Split(string(committed), "\n"), strings.Split(string(fresh), "\n")
	for i := range max(len(a), len(b)) {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y && !strings.HasPrefix(x, ".TH ") {
			return fmt.Sprintf("line %d: committed %q, generated %q", i+1, x, y)
		}
	}
	return "differs"
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// Generate keeps a page whose text is unchanged but for the date, removes
// files it no longer generates, and rewrites changed ones.
func TestGenerateKeepsDatesAndRemovesStaleFiles(t *testing.T) {
	dir := t.TempDir()
	then := time.Date(2024, time.March, 1, 0, 0, 0, 0, time.UTC)
	if err := Generate(dir, then); err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(dir, manDir, "perfrun.1")
	stale := filepath.Join(dir, manDir, "gone.1")
	if err := os.WriteFile(stale, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	bash := filepath.Join(dir, bashDir, "pls")
	if err := os.WriteFile(bash, []byte("edited"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Generate(dir, then.AddDate(1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"Mar 2024"`)) {
		t.Errorf("perfrun.1 lost its date: %s", firstLine(b))
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale %s not removed: %v", stale, err)
	}
	if b, _ := os.ReadFile(bash); string(b) == "edited" {
		t.Errorf("%s not regenerated", bash)
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// Every page has the sections man and whatis need, and the manual
// sections of the help text.
func TestManualPages(t *testing.T) {
	files, err := Files(time.Date(2025, time.June, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]string{
		"perfrun.1":           {"\n.SH NAME\nperfrun - run a command", "\n.SH SYNOPSIS\n", "\n.SH DESCRIPTION\nperfrun runs CMD", "\n.SH OPTIONS\n", "\\fB--timeout\\fP \\fIDURATION\\fP", "\n.SH EXIT STATUS\n", "\n.TP\n127\n", "\n.SH ENVIRONMENT\n", "\n.SH EXAMPLE\n", "\\fBpls\\fP(1)"},
		"pls.1":               {"\n.SH NAME\npls - ", "\n.SH SIGNALS\n"},
		"wholock.1":           {"\n.SH NAME\nwholock - list", "\n.SH EXIT STATUS\n"},
		"perflockd.8":         {`.TH "PERFLOCKD" "8" "Jun 2025" "perflock"`, "\n.SH DRIVERS\n", "\n.TP\nsystemd\n", "(default \"freeze\")", "\\fBperflockd-install\\fP(8)"},
		"perflockd-install.8": {"\n.SH NAME\nperflockd-install - ", "\n.SH SYNOPSIS\n\\fBperflockd install [flags]\\fP"},
	} {
		b, ok := files[filepath.Join(manDir, name)]
		if !ok {
			t.Errorf("no %s", name)
			continue
		}
		for _, w := range want {
			if !bytes.Contains(b, []byte(w)) {
				t.Errorf("%s lacks %q", name, w)
			}
		}
		// DESCRIPTION comes before the extra sections, SEE ALSO last.
		if i, j := bytes.Index(b, []byte(".SH DESCRIPTION")), bytes.Index(b, []byte(".SH SEE ALSO")); i < 0 || j < i || bytes.Contains(b[j+1:], []byte("\n.SH ")) {
			t.Errorf("%s: sections out of order", name)
		}
	}
	for _, shell := range []string{bashDir + "/perfrun", zshDir + "/_pls", fishDir + "/wholock.fish", bashDir + "/perflockd"} {
		if len(files[shell]) == 0 {
			t.Errorf("no %s", shell)
		}
	}
}

func TestMarkdown(t *testing.T) {
	desc, sections := Markdown(`perfrun runs CMD <alone>,
on *every* core.

  systemctl enable --now x.socket

EXIT STATUS
  0    done
  128+N  died of
         signal N

LEASE
  the lease lasts
  -o keeps it.`)
	wantDesc := "perfrun runs CMD \\<alone\\>, on \\*every\\* core.\n\n```\n  systemctl enable --now x.socket\n```"
	if desc != wantDesc {
		t.Errorf("desc:\n%s\nwant:\n%s", desc, wantDesc)
	}
	wantSections := "## EXIT STATUS\n\n0\n: done\n\n128+N\n: died of signal N\n\n## LEASE\n\nthe lease lasts -o keeps it.\n"
	if sections != wantSections {
		t.Errorf("sections:\n%q\nwant:\n%q", sections, wantSections)
	}
}
