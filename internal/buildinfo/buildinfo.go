// Package buildinfo tells which sanboot a program is: the main module's
// version as the Go toolchain recorded it at build time.
package buildinfo

import "runtime/debug"

// Version is the main module's version ("v0.3.0", a pseudo-version for a
// build from a commit), or "devel" for a build from a work tree.
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
