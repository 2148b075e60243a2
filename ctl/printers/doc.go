// Package printers writes sanboot's objects as sanbootctl prints them:
// tables (and wide ones) with stable columns, JSON and YAML in the API's
// JSON names (objectjson.go), kind/name lines, and jsonpath templates
// (jsonpath.go). A Printer is one format on one writer; ctl/cli builds it
// from a command's -o and --all-projects.
//
//	print.go       formats, Printer, the tables of nodes, images and
//	               agents, JSON/YAML/name output
//	snapshots.go   the table of images made from snapshots
//	objectjson.go  the JSON of one object (status whole, manifest header)
//	jsonpath.go    -o jsonpath=TEMPLATE
//	format.go      ages, <none>
package printers
