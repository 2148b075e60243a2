package api

import (
	"testing"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// A snapshot or a copy may leave its size to the API server (0); a size it
// does give must still be valid, and other sources always need one.
func TestDerivedImageSize(t *testing.T) {
	snapshot := &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Snapshot{Snapshot: &sanbootv1.SnapshotSource{Node: "node-01"}}}
	cp := &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Copy{Copy: &sanbootv1.CopySource{Image: "golden"}}}
	blank := &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Blank{Blank: &sanbootv1.BlankSource{}}}
	for _, tc := range []struct {
		name string
		src  *sanbootv1.ImageSource
		size int64
		ok   bool
	}{
		{"snapshot without size", snapshot, 0, true},
		{"copy without size", cp, 0, true},
		{"copy with a size", cp, 1 << 20, true},
		{"copy with a bad size", cp, 1000, false},
		{"snapshot with a negative size", snapshot, -512, false},
		{"blank without size", blank, 0, false},
		{"no source without size", nil, 0, false},
	} {
		im := validImage()
		im.Spec.Source, im.Spec.SizeBytes = tc.src, tc.size
		err := ValidateImage(im)
		if tc.ok {
			if err != nil {
				t.Errorf("%s: %v, want nil", tc.name, err)
			}
			continue
		}
		checkFieldError(t, tc.name, err, "spec.sizeBytes", "positive multiple of 512 bytes")
	}
}
