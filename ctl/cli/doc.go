// Package cli is sanbootctl's command tree (cobra).
//
// Everything a command touches outside itself comes in through Env (output
// streams, environment, clock), and the tree is built afresh by NewRoot for
// every run, so tests drive the real commands in-process and there is no
// package-level mutable state.
//
// Layout:
//
//	root.go         Env, Run, the root command and its global flags
//	session.go      lazy resolution of endpoints/project and the API connection
//	exitcodes.go    exit codes and how errors map to them
//	errors.go       turning gRPC errors into messages a user can act on
//	provision.go    provision / deprovision
//	get.go          get nodes|images|agents, image ls, agents ls
//	image.go        image create / rm
//	wait.go         wait node, and the watch-driven waiting that provision
//	                --wait and deprovision --wait share
//	print.go        tables, JSON and YAML
//	format.go       ages, sizes, labels
package cli
