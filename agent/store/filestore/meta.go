package filestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sanboot/sanboot/agent/store"
)

// xattrName is the extended attribute that describes a store file. It is
// set on the temp file before the rename that publishes it, so a file and
// its description appear at once.
const xattrName = "user.sanboot.v1"

// meta is the value of xattrName, JSON. Kind is "image" or "disk".
type meta struct {
	Kind      string      `json:"kind"`
	Source    *sourceMeta `json:"source,omitempty"`    // image
	SHA256    string      `json:"sha256,omitempty"`    // image, when computed
	Image     string      `json:"image,omitempty"`     // disk: the image it was cloned from
	Owner     string      `json:"owner,omitempty"`     // disk: the node record's uid
	CloneMode string      `json:"cloneMode,omitempty"` // disk: how it was made
}

type sourceMeta struct {
	Kind     string `json:"kind"`
	UploadID string `json:"uploadId,omitempty"`
	Member   string `json:"member,omitempty"`
	URL      string `json:"url,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Node     string `json:"node,omitempty"`
	Image    string `json:"image,omitempty"`
	UID      string `json:"uid,omitempty"`
}

func toSourceMeta(s store.Source) *sourceMeta {
	return &sourceMeta{Kind: string(s.Kind), UploadID: s.UploadID, Member: s.Member, URL: s.URL, SHA256: s.SHA256, Node: s.Node, Image: s.Image, UID: s.UID}
}

func (m meta) source() store.Source {
	if m.Source == nil {
		return store.Source{}
	}
	s := m.Source
	return store.Source{Kind: store.SourceKind(s.Kind), UploadID: s.UploadID, Member: s.Member, URL: s.URL, SHA256: s.SHA256, Node: s.Node, Image: s.Image, UID: s.UID}
}

func writeMeta(f *os.File, m meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := unix.Fsetxattr(int(f.Fd()), xattrName, b, 0); err != nil {
		return fmt.Errorf("set extended attribute %s (%d bytes) on %s: %w", xattrName, len(b), f.Name(), err)
	}
	return nil
}

// readMeta reads f's description; a file without one has a zero meta.
func readMeta(f *os.File) (meta, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Fgetxattr(int(f.Fd()), xattrName, buf)
		switch {
		case errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP):
			return meta{}, nil
		case errors.Is(err, unix.ERANGE) && len(buf) < 1<<16:
			buf = make([]byte, 1<<16)
			continue
		case err != nil:
			return meta{}, fmt.Errorf("read extended attribute %s of %s: %w", xattrName, f.Name(), err)
		}
		var m meta
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			return meta{}, fmt.Errorf("extended attribute %s of %s is not sanboot's (%v): remove the file or the attribute", xattrName, f.Name(), err)
		}
		return m, nil
	}
}
