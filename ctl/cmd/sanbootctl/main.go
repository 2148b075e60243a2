// Command sanbootctl is the command-line client of sanboot. The commands
// live in package github.com/sanboot/sanboot/ctl/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sanboot/sanboot/ctl/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Now: time.Now}, os.Args[1:])
	stop()
	os.Exit(code)
}
