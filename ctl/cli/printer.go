package cli

import "github.com/sanboot/sanboot/ctl/printers"

// printer is the printers.Printer of a command, to which cli adds tables
// of its own (members, member.go).
type printer struct{ printers.Printer }

// printer is the printer of a get or ls command's flags; single prints
// one object rather than a list.
func (s *session) printer(f listFlags, single bool) printer {
	return printer{printers.Printer{W: s.env.Stdout, Format: f.output, AllProjects: f.allProjects, Now: s.env.Now(), Single: single}}
}
