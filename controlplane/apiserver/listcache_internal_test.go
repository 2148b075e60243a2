package apiserver

import (
	"testing"
	"time"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// A list's snapshot is kept until its last page (done), until it is left
// unused for listSnapshotTTL, or until newer ones push it out (more than
// maxListSnapshots lists or maxListSnapshotNodes nodes), the least
// recently used first; a list larger than maxListSnapshotNodes is not
// kept.
func TestListSnapshots(t *testing.T) {
	now := time.Unix(1000, 0)
	nodes := []*sanbootv1.Node{{}}
	quarter := make([]*sanbootv1.Node, maxListSnapshotNodes/4)
	key := func(rev int64) listKey { return listKey{rev: rev, project: "p"} }
	for _, tc := range []struct {
		name string
		then func(l *listSnapshots) time.Time // what happens, and when key(1) is asked for next
		kept bool
	}{
		{"next page soon", func(*listSnapshots) time.Time { return now.Add(listSnapshotTTL / 2) }, true},
		{"next page too late", func(*listSnapshots) time.Time { return now.Add(listSnapshotTTL + time.Second) }, false},
		{"last page served", func(l *listSnapshots) time.Time { l.done(key(1)); return now }, false},
		{"other lists, first used since", func(l *listSnapshots) time.Time {
			for i := range maxListSnapshots - 1 {
				l.put(key(int64(10+i)), nodes, now.Add(time.Duration(i+1)*time.Millisecond))
			}
			l.get(key(1), now.Add(time.Second)) // used: the others are older
			l.put(key(100), nodes, now.Add(2*time.Second))
			return now.Add(2 * time.Second)
		}, true},
		{"other lists, first unused", func(l *listSnapshots) time.Time {
			for i := range maxListSnapshots {
				l.put(key(int64(10+i)), nodes, now.Add(time.Duration(i+1)*time.Millisecond))
			}
			return now.Add(time.Second)
		}, false},
		{"other lists, too many nodes", func(l *listSnapshots) time.Time {
			for i := range 4 {
				l.put(key(int64(10+i)), quarter, now.Add(time.Duration(i+1)*time.Millisecond))
			}
			return now.Add(time.Second)
		}, false},
		{"other lists, nodes to spare", func(l *listSnapshots) time.Time {
			for i := range 3 {
				l.put(key(int64(10+i)), quarter, now.Add(time.Duration(i+1)*time.Millisecond))
			}
			return now.Add(time.Second)
		}, true},
		{"other revision or fields", func(l *listSnapshots) time.Time {
			if l.get(key(2), now) != nil || l.get(listKey{rev: 1, project: "p", specOnly: true}, now) != nil {
				t.Error("a snapshot found by another key")
			}
			return now
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l listSnapshots
			l.put(key(1), nodes, now)
			at := tc.then(&l)
			if got := l.get(key(1), at) != nil; got != tc.kept {
				t.Errorf("snapshot kept: %v, want %v", got, tc.kept)
			}
			held := 0
			for _, s := range l.lists {
				held += len(s.nodes)
			}
			if len(l.lists) > maxListSnapshots || held > maxListSnapshotNodes || held != l.nodes {
				t.Errorf("%d snapshots kept of %d nodes (counted %d), at most %d of %d", len(l.lists), held, l.nodes, maxListSnapshots, maxListSnapshotNodes)
			}
		})
	}

	var l listSnapshots
	l.put(key(1), make([]*sanbootv1.Node, maxListSnapshotNodes+1), now)
	if l.get(key(1), now) != nil || l.nodes != 0 {
		t.Errorf("a list of more than %d nodes was kept", maxListSnapshotNodes)
	}
}
