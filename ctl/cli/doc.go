// Package cli is sanbootctl's command tree (cobra).
//
// Everything a command touches outside itself comes in through Env (output
// streams, environment, clock), and the tree is built afresh by NewRoot for
// every run, so tests drive the real commands in-process and there is no
// package-level mutable state. Every command keeps its flags and arguments in
// options with complete, validate and run (options.go), as kubectl's
// pkg/cmd/<verb> does; the printers are package ctl/printers.
//
// Layout:
//
//	root.go         Env, Run, the root command and its global flags
//	session.go      lazy resolution of endpoints/project and the API connection
//	options.go      the options interface (complete/validate/run), runOptions,
//	                the NAME and NAME... arguments, and noSubcommand (get,
//	                describe and wait without a known resource)
//	exitcodes.go    exit codes and how errors map to them
//	errors.go       turning gRPC errors into messages a user can act on
//	complete.go     shell completion of node and image names
//	get.go          get KIND [NAME...], and the ls of image, agents and snapshot:
//	                one generic get over the kinds of kinds.go
//	kinds.go        nodes, images, snapshots and agents: how each is got,
//	                listed, watched and printed
//	getwatch.go     get KIND -w: one generic watch
//	list.go         listing every page of a list
//	printer.go      the printer of a command (a printers.Printer)
//	labels.go       --label key=value
//	provision.go    provision / deprovision
//	apply.go        apply -f (manifests, in order, --prune, --wait)
//	diff.go         diff -f
//	delete.go       delete node|image, delete -f, --keep-disk; nodeArgs (NODE...
//	                or -l), which wait node shares
//	inorder.go      calls in flight, results in order (apply, diff, delete -f)
//	describe.go     describe node|image|agent: conditions, events, sessions
//	wait.go         wait node, and the watch-driven waiting that provision
//	                --wait and deprovision --wait share
//	image.go        image create / rm; agents ls / enroll
//	imagecopy.go    image cp / mv
//	imageio.go      image import / export (upload and download streams)
//	imagewait.go    waiting until an image is Ready
//	progress.go     the progress bar of transfers
//	snapshot.go     snapshot create / ls / rm
//	bootscript.go   boot-script NODE
//	member.go       member list / add / promote / remove
//	backup.go       backup FILE (a snapshot of the control plane's etcd)
//	configcmd.go    config view
//	pki.go          pki init / issue / show (local files only)
package cli
