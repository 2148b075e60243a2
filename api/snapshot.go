package api

import sanbootv1 "github.com/sanboot/sanboot/api/v1"

// IsSnapshot reports whether im was made from a snapshot: its source is a
// node's disk, or it is a copy of such an image. The API server sets
// spec.parent on both (the image the node was cloned from).
func IsSnapshot(im *sanbootv1.Image) bool {
	_, snap := im.GetSpec().GetSource().GetKind().(*sanbootv1.ImageSource_Snapshot)
	return snap || im.GetSpec().GetParent() != ""
}
