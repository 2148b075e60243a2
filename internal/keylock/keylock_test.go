package keylock

import (
	"context"
	"testing"
	"time"
)

func TestMap(t *testing.T) {
	var k Map
	ctx := context.Background()
	unlock, err := k.Lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := k.Lock(ctx, "b") // another key does not wait
	if err != nil {
		t.Fatal(err)
	}
	other()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := k.Lock(short, "a"); err == nil {
		t.Fatal("a held key was taken twice")
	}
	got := make(chan error, 1)
	go func() {
		u, err := k.Lock(ctx, "a")
		if err == nil {
			u()
		}
		got <- err
	}()
	unlock()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := k.held(); n != 0 {
		t.Errorf("%d locks left after every unlock", n)
	}
}
