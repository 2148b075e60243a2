package rbd

import (
	"sync"
	"time"

	"github.com/sanboot/sanboot/agent/store"
)

// imageCacheTTL is how long Clone reuses what it read of an image. Images
// do not change once made (only their name can go, and come again for
// another image): a clone from an image deleted meanwhile fails in rbd
// clone (ENOENT) and forgets it, and this store's own DeleteImage forgets
// it at once. Bulk provisioning clones one image many times in a row, so
// this saves one rbd call (a process start) per disk.
const imageCacheTTL = 10 * time.Second

// imageCache holds recent reads of images by RBD name, for Clone.
type imageCache struct {
	mu sync.Mutex
	m  map[string]cachedImage
}

type cachedImage struct {
	im store.Image
	at time.Time
}

// get returns image n as read less than imageCacheTTL ago, else read()'s
// answer (kept when it is not an error).
func (c *imageCache) get(n string, read func() (store.Image, error)) (store.Image, error) {
	c.mu.Lock()
	e, ok := c.m[n]
	c.mu.Unlock()
	if ok && time.Since(e.at) < imageCacheTTL {
		return e.im, nil
	}
	im, err := read()
	if err != nil {
		return im, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedImage{}
	}
	if len(c.m) > 1024 { // bounded: forget everything rather than grow
		clear(c.m)
	}
	c.m[n] = cachedImage{im: im, at: time.Now()}
	return im, nil
}

// forget drops image n.
func (c *imageCache) forget(n string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, n)
}
