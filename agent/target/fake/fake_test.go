package fake_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/agent/target/fake"
	"github.com/sanboot/sanboot/agent/target/targettest"
)

func TestConformance(t *testing.T) {
	targettest.Run(t, func(t *testing.T) target.Driver { return fake.New() },
		targettest.WithLogin(func(t *testing.T, d target.Driver, tg target.Target) func() {
			f := d.(*fake.Driver)
			if err := f.Login(tg.IQN, tg.Initiators[0], "127.0.0.1"); err != nil {
				t.Fatal(err)
			}
			return func() { f.Logout(tg.IQN, tg.Initiators[0]) }
		}))
}

func TestResetForgetsEverything(t *testing.T) {
	d := fake.New()
	tg := target.Target{IQN: "iqn.2026-11.io.sanboot:default.a", BackingPath: "/x/a.raw", SizeBytes: 512,
		Initiators: []string{"iqn.2026-11.io.sanboot:initiator.default.a"}, Portals: []string{"127.0.0.1:3260"}, Serial: "s1"}
	if err := d.Ensure(context.Background(), tg); err != nil {
		t.Fatal(err)
	}
	d.Reset()
	if l, _ := d.List(context.Background()); len(l) != 0 {
		t.Fatalf("after Reset: %v", l)
	}
	boom := errors.New("boom")
	d.FailWith(func(op, iqn string) error { return boom })
	if err := d.Ensure(context.Background(), tg); !errors.Is(err, boom) {
		t.Fatalf("Ensure with FailWith: %v", err)
	}
	if l, _ := d.List(context.Background()); len(l) != 0 {
		t.Fatalf("failed Ensure created %v", l)
	}
}
