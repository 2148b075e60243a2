package looptest_test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sanboot/sanboot/internal/looptest"
)

func TestMount(t *testing.T) {
	for _, tc := range []struct {
		fs    looptest.FS
		size  int64
		magic int64
	}{
		{looptest.XFS, 512 << 20, unix.XFS_SUPER_MAGIC},
		{looptest.Btrfs, 256 << 20, unix.BTRFS_SUPER_MAGIC},
		{looptest.Ext4, 16 << 20, unix.EXT4_SUPER_MAGIC},
	} {
		t.Run(string(tc.fs), func(t *testing.T) {
			mnt := looptest.Mount(t, tc.fs, tc.size)
			var st unix.Statfs_t
			if err := unix.Statfs(mnt, &st); err != nil {
				t.Fatal(err)
			}
			if st.Type != tc.magic {
				t.Errorf("file system magic at %s = %#x, want %#x", mnt, st.Type, tc.magic)
			}
			if total := int64(st.Blocks) * st.Frsize; total > tc.size || total < tc.size/2 {
				t.Errorf("file system size %d, want about %d", total, tc.size)
			}
			if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		})
	}
}
