package cli

import (
	"context"

	"github.com/spf13/cobra"
)

// options are one command's flags and arguments, as kubectl's
// pkg/cmd/<verb> keeps them: complete fills them in from the arguments,
// validate checks them before anything is sent (a usage error exits 2),
// run does the work. A command's RunE is runOptions of its options.
type options interface {
	complete(args []string) error
	validate() error
	run(ctx context.Context, s *session) error
}

// runOptions is the RunE of a command whose flags fill o.
func runOptions(s *session, o options) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := o.complete(args); err != nil {
			return err
		}
		if err := o.validate(); err != nil {
			return err
		}
		return o.run(cmd.Context(), s)
	}
}

// nameArgs are the arguments of a command that takes names (NAME...).
type nameArgs struct{ names []string }

func (o *nameArgs) complete(names []string) error {
	o.names = names
	return nil
}

// nameArg is the argument of a command that takes one name (NAME); its
// Args check makes sure there is exactly one.
type nameArg struct{ name string }

func (o *nameArg) complete(args []string) error {
	o.name = args[0]
	return nil
}

// noSubcommand is the RunE of a command that only groups others (get,
// describe, wait): without one, or with an unknown one, it says what to
// type ("name what to VERB: USE", "cannot VERB "X": use USE").
func noSubcommand(verb, use string) func(*cobra.Command, []string) error {
	return func(_ *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usageErrorf("name what to %s: %s", verb, use)
		}
		return usageErrorf("cannot %s %q: use %s", verb, args[0], use)
	}
}
