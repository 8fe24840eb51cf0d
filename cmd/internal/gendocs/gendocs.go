package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"

	"github.com/perflock/perflock/cmd/internal/cli"
	"github.com/perflock/perflock/cmd/internal/daemoncli"
	"github.com/perflock/perflock/internal/atomicfile"
)

// The folders Generate owns, relative to the repository root. Files in them
// that it does not generate are removed.
const (
	bashDir = "contrib/completion/bash"
	zshDir  = "contrib/completion/zsh"
	fishDir = "contrib/completion/fish"
	manDir  = "docs/man"
)

// OwnedDirs are the folders Generate writes, relative to the repository root.
var OwnedDirs = []string{bashDir, zshDir, fishDir, manDir}

// program is one of perflock's commands and the manual section of its pages.
type program struct {
	newCmd  func() *cobra.Command
	section string
}

var programs = []program{
	{cli.NewPerfrun, "1"},
	{cli.NewPls, "1"},
	{cli.NewWholock, "1"},
	{daemoncli.NewPerflockd, "8"},
}

// Generate writes the completions and manual pages under root. A manual page
// whose text differs from the one on disk only in its date is left as it is,
// so the date is that of the page's last change; changed pages get date.
func Generate(root string, date time.Time) error {
	files, err := Files(date)
	if err != nil {
		return err
	}
	for _, d := range OwnedDirs {
		dir := filepath.Join(root, d)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		old, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("read %s: %w", dir, err)
		}
		for _, e := range old {
			name := filepath.Join(d, e.Name())
			if _, ok := files[name]; !ok && e.Type().IsRegular() {
				if err := os.Remove(filepath.Join(root, name)); err != nil {
					return err
				}
			}
		}
	}
	for name, b := range files {
		path := filepath.Join(root, name)
		if old, err := os.ReadFile(path); err == nil && SameExceptDate(old, b) {
			continue
		}
		if err := atomicfile.WriteFile(path, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Files returns every generated file by its path relative to the repository
// root, the manual pages dated date.
func Files(date time.Time) (map[string][]byte, error) {
	files := map[string][]byte{}
	var pages []manPage
	for _, p := range programs {
		root := p.newCmd()
		name := root.Name()
		var bash, zsh, fish bytes.Buffer
		if err := root.GenBashCompletionV2(&bash, true); err != nil {
			return nil, fmt.Errorf("%s: bash completion: %w", name, err)
		}
		if err := root.GenZshCompletion(&zsh); err != nil {
			return nil, fmt.Errorf("%s: zsh completion: %w", name, err)
		}
		if err := root.GenFishCompletion(&fish, true); err != nil {
			return nil, fmt.Errorf("%s: fish completion: %w", name, err)
		}
		files[filepath.Join(bashDir, name)] = bash.Bytes()
		files[filepath.Join(zshDir, "_"+name)] = zsh.Bytes()
		files[filepath.Join(fishDir, name+".fish")] = fish.Bytes()
		pages = appendPages(pages, root, p.section)
	}
	for _, pg := range pages {
		b, err := pg.render(date, pages)
		if err != nil {
			return nil, err
		}
		files[filepath.Join(manDir, pg.file())] = b
	}
	return files, nil
}

// manPage is the manual page of one command or subcommand.
type manPage struct {
	cmd     *cobra.Command
	name    string // the command path with dashes: perflockd-install
	section string
}

func (p manPage) file() string { return p.name + "." + p.section }

// appendPages appends the pages of cmd and its available subcommands.
func appendPages(pages []manPage, cmd *cobra.Command, section string) []manPage {
	pages = append(pages, manPage{cmd, strings.ReplaceAll(cmd.CommandPath(), " ", "-"), section})
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() && !c.IsAdditionalHelpTopicCommand() {
			pages = appendPages(pages, c, section)
		}
	}
	return pages
}

// render is the page in roff: cobra's NAME, SYNOPSIS, DESCRIPTION (the
// first paragraphs of Long), OPTIONS and EXAMPLE, with the sections of Long
// and of the "manual" annotation (EXIT STATUS, ENVIRONMENT, ...) between
// OPTIONS and EXAMPLE, and a SEE ALSO naming every other page.
func (p manPage) render(date time.Time, all []manPage) ([]byte, error) {
	text := p.cmd.Long
	if m := p.cmd.Annotations["manual"]; m != "" {
		text += "\n\n" + m
	}
	desc, sections := Markdown(text)
	p.cmd.Long = desc
	p.cmd.DisableAutoGenTag = true
	var buf bytes.Buffer
	header := &doc.GenManHeader{Section: p.section, Date: &date, Source: "perflock", Manual: "perflock manual"}
	if err := doc.GenMan(p.cmd, header, &buf); err != nil {
		return nil, fmt.Errorf("%s: manual page: %w", p.name, err)
	}
	page := buf.Bytes()
	// cobra's OPTIONS are paragraphs with a tab; ours are a tagged list.
	if i := bytes.Index(page, []byte("\n.SH OPTIONS\n")); i >= 0 {
		end := len(page)
		if j := bytes.Index(page[i+1:], []byte("\n.SH ")); j >= 0 {
			end = i + 1 + j
		}
		page = slices.Concat(page[:i], roff(options(p.cmd)), page[end:])
	}
	// cobra's SEE ALSO names only the parent and children: ours replaces it.
	if i := bytes.Index(page, []byte("\n.SH SEE ALSO\n")); i >= 0 {
		page = page[:i+1]
	}
	if sections != "" {
		extra := roff(sections)
		if i := bytes.Index(page, []byte("\n.SH EXAMPLE\n")); i >= 0 {
			page = slices.Concat(page[:i], extra, page[i:])
		} else {
			page = append(page, extra...)
		}
	}
	var refs []string
	for _, q := range all {
		if q.name != p.name {
			refs = append(refs, fmt.Sprintf("**%s**(%s)", mdEscape(q.name), q.section))
		}
	}
	sort.Strings(refs)
	page = append(page, roff("## SEE ALSO\n"+strings.Join(refs, ", ")+"\n")...)
	return bytes.TrimLeft(page, "\n"), nil
}

// options is the OPTIONS section in markdown: every flag of cmd, with its
// argument and default.
func options(cmd *cobra.Command) string {
	var items []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Deprecated != "" {
			return
		}
		arg, usage := pflag.UnquoteUsage(f)
		t := "**--" + mdEscape(f.Name) + "**"
		if f.Shorthand != "" && f.ShorthandDeprecated == "" {
			t = "**-" + mdEscape(f.Shorthand) + "**, " + t
		}
		if arg != "" && f.Value.Type() != "bool" {
			t += " *" + mdEscape(arg) + "*"
		}
		switch f.DefValue {
		case "", "0", "0s", "false", "[]":
		default:
			if f.Value.Type() == "string" {
				usage += fmt.Sprintf(" (default %q)", f.DefValue)
			} else {
				usage += " (default " + f.DefValue + ")"
			}
		}
		items = append(items, t+"\n: "+mdEscape(usage))
	})
	if len(items) == 0 {
		return ""
	}
	return "## OPTIONS\n" + strings.Join(items, "\n\n") + "\n"
}

// roff renders markdown with level-2 headings (.SH) into roff, without the
// preamble md2man puts before a whole document.
func roff(markdown string) []byte {
	return bytes.TrimPrefix(md2man.Render([]byte(markdown)), []byte(".nh\n"))
}

// thDate matches the date field of a .TH line.
var thDate = regexp.MustCompile(`(?m)^(\.TH "[^"]*" "[^"]*" )"[^"]*"`)

// SameExceptDate reports whether two manual pages (or any two files) are
// the same but for the date in their .TH line.
func SameExceptDate(a, b []byte) bool {
	const blank = `$1"-"`
	return bytes.Equal(thDate.ReplaceAll(a, []byte(blank)), thDate.ReplaceAll(b, []byte(blank)))
}
