// Command sanbootctl-docs writes sanbootctl's man pages (one per command,
// from the same cobra tree and --help texts) into a directory: "make docs"
// runs it with docs/man.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra/doc"

	"github.com/sanboot/sanboot/ctl/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: sanbootctl-docs DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	root := cli.NewRoot(cli.Env{})
	root.DisableAutoGenTag = true // no generation date: the pages change only when the help does
	// A fixed date for the same reason; the pages carry the section and source.
	date := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	header := &doc.GenManHeader{Title: "SANBOOTCTL", Section: "1", Source: "sanboot", Manual: "sanboot manual", Date: &date}
	if err := doc.GenManTree(root, header, dir); err != nil {
		fmt.Fprintln(os.Stderr, "error: write man pages:", err)
		os.Exit(1)
	}
}
