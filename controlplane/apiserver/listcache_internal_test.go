package apiserver

import (
	"testing"
	"time"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// A list's snapshot is kept until its last page (done), until it is left
// unused for listSnapshotTTL, or until maxListSnapshots newer ones push it
// out, the least recently used first.
func TestListSnapshots(t *testing.T) {
	now := time.Unix(1000, 0)
	nodes := []*sanbootv1.Node{{}}
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
			if len(l.lists) > maxListSnapshots {
				t.Errorf("%d snapshots kept, at most %d", len(l.lists), maxListSnapshots)
			}
		})
	}
}
