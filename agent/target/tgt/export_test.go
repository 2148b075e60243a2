package tgt

import "time"

// KeepListing makes d create new targets from a listing of tgtd up to
// age old, instead of listedFor: a test's burst then takes one listing
// however slow the machine.
func KeepListing(d *Driver, age time.Duration) { d.listedFor = age }
