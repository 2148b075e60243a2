package cli

import (
	"strings"
	"testing"

	"github.com/sanboot/sanboot/internal/golden"
)

// TestDeleteImageGolden: delete image (= image rm, with a deadline) of
// a protected image, a missing one with and without --ignore-not-found,
// and an unused one, each with a golden transcript in testdata/delete/.
func TestDeleteImageGolden(t *testing.T) {
	_, addr := seededFake(t)
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"image_protected.txt", []string{"delete", "image", "debian-13"}},
		{"image_missing.txt", []string{"delete", "image", "nope"}},
		{"image_missing_ignored.txt", []string{"delete", "images", "nope", "--ignore-not-found"}},
		{"image_no_name.txt", []string{"delete", "image"}},
		{"image.txt", []string{"delete", "img", "scratch", "--timeout", "1m"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, testCtx(t), nil, append([]string{"--endpoints", addr}, tc.args...)...)
			golden.Check(t, "delete/"+tc.golden, transcript(r))
		})
	}
}
