package apiserver_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// BenchmarkProvision1000 drives 1,000 nodes through the API, the scheduler
// and two FAKE agents that answer at once, until a watcher has seen every
// one Ready. One op is 1,000 nodes.
func BenchmarkProvision1000(b *testing.B) {
	const nodes, clients = 1000, 32
	e := start(b)
	agents := []string{"a", "b"}
	for _, name := range agents {
		a := e.agent(name, 10)
		go a.Serve(e.ctx, e.log)
	}
	round := 0
	for b.Loop() {
		b.StopTimer()
		project := fmt.Sprintf("bench-%d", round)
		round++
		if _, err := e.api.PutImage(e.ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
			Metadata: &sanbootv1.ObjectMeta{Project: project, Name: "img"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 30}}}); err != nil {
			b.Fatal(err)
		}
		for _, name := range agents {
			a := e.agent(name, 10)
			if err := a.SetReplica(e.ctx, project, "img", api.ReplicaReady); err != nil {
				b.Fatal(err)
			}
		}
		w := e.watch(&sanbootv1.WatchNodesRequest{Project: project})
		w.initial()
		b.StartTimer()

		var next atomic.Int64
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for i := next.Add(1); i <= nodes; i = next.Add(1) {
					n := &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Project: project, Name: fmt.Sprintf("n%04d", i)},
						Spec: &sanbootv1.NodeSpec{Image: "img"}}
					if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		ready := map[string]bool{}
		w.until("every node Ready", func(ev *sanbootv1.NodeEvent) bool {
			if ev.Node.GetStatus().GetPhase() == api.PhaseReady {
				ready[ev.Node.Metadata.Name] = true
			}
			return len(ready) == nodes
		})
		wg.Wait()
	}
}
