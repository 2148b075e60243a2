package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/sanboot/sanboot/agent/target/lio"
	"github.com/sanboot/sanboot/api"
)

// runLIO is "sanboot-agent lio dump": what LIO's configfs holds, in the
// lio driver's model, for an operator. It changes nothing and prints no
// CHAP secret.
func runLIO(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "dump" {
		return errors.New("usage: sanboot-agent lio dump [--configfs-root DIR]: prints what LIO's configfs holds")
	}
	fs := flag.NewFlagSet("sanboot-agent lio dump", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("configfs-root", lio.DefaultRoot, "LIO's configfs directory")
	prefix := fs.String("prefix", api.DefaultAuthority, "names that mark sanboot's targets and backstores, counted on the last line")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("lio dump: unexpected arguments %q", fs.Args())
	}
	d := lio.New(lio.Config{Root: *root, Log: slog.New(slog.DiscardHandler)})
	snap, err := d.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("lio dump: %w", err)
	}
	return snap.WriteText(stdout, *prefix)
}
