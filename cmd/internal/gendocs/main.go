// Command gendocs writes perflock's shell completions and manual pages from
// the commands' cobra trees (`make docs`):
//
//	contrib/completion/bash/NAME        bash (cobra's V2 completion)
//	contrib/completion/zsh/_NAME        zsh
//	contrib/completion/fish/NAME.fish   fish
//	docs/man/NAME.SECTION               roff manual pages
//
// The files are committed; a test fails when they differ from what the
// commands generate. Run it from the repository root, or pass -out.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	out := flag.String("out", ".", "the repository root to write into")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: gendocs [-out DIR]")
		os.Exit(2)
	}
	date, err := manDate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
	if err := Generate(*out, date); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

// manDate is the date in the header of a changed manual page:
// SOURCE_DATE_EPOCH when set, else now.
func manDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Now().UTC(), nil
	}
	var sec int64
	if _, err := fmt.Sscan(s, &sec); err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}
