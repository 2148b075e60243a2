package boot

import (
	"strings"
	"testing"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// A node whose agent is in a storage domain gets a script that, when its
// agent's portals fail, tries the other Ready agents of the domain (their
// advertised portals, else their portals); an agent of another domain, a
// dead one and one with a problem are not named. When the node moves to
// another agent (failover), the script names that agent's portal first.
func TestServerNamesFailoverAgents(t *testing.T) {
	e := startBoot(t, Settings{})
	const domain = "rbd:fsid/pool"
	agents := []*sanbootv1.AgentRecord{
		{Name: "rack1", StorageDomain: domain, Portals: []string{"10.0.2.2:3260"}},
		{Name: "rack2", StorageDomain: domain, Portals: []string{"127.0.0.1:3260"}, AdvertisePortals: []string{"10.0.3.2:3260"}},
		{Name: "rack3", StorageDomain: domain, Portals: []string{"10.0.4.2:3260"}},                          // dead
		{Name: "rack4", StorageDomain: domain, Portals: []string{"10.0.5.2:3260"}, Problem: "tgtd is down"}, // not Ready
		{Name: "rack5", StorageDomain: "rbd:fsid/other", Portals: []string{"10.0.6.2:3260"}},                // another pool
		{Name: "rack6", StorageDomain: domain, Portals: []string{"10.0.7.2:3260"}},
	}
	for _, a := range agents {
		e.put(api.AgentKey(a.Name), a)
		if a.Name != "rack3" {
			e.putAlive(a.Name)
		}
	}
	e.putNode(readyNode("n1"), nil)
	body := e.await("/boot/default/n1", "sanboot-failover")
	for _, want := range []string{
		"sanboot iscsi:10.0.2.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-failover",
		"sanboot iscsi:10.0.3.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || sanboot iscsi:10.0.7.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-retry",
		"trying the agents it fails over to (rack2, rack6)",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("script lacks %q:\n%s", want, body)
		}
	}
	for _, absent := range []string{"10.0.4.2", "10.0.5.2", "10.0.6.2", "127.0.0.1"} {
		if strings.Contains(body, absent) {
			t.Errorf("script names %s:\n%s", absent, body)
		}
	}

	// rack1 dies; the scheduler moves n1 to rack2, which serves it.
	if _, err := e.cli.Delete(e.ctx, api.AliveKey("rack1")); err != nil {
		t.Fatal(err)
	}
	e.put(api.PlacementKey("default", "n1"), &sanbootv1.Placement{Agent: "rack2", Generation: 2})
	moved := readyNode("n1").Status
	moved.Agent, moved.Portals = "rack2", []string{"10.0.3.2:3260"}
	e.put(api.NodeStatusKey("default", "n1", "rack2"), moved)
	body = e.await("/boot/default/n1", "sanboot iscsi:10.0.3.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-failover")
	if !strings.Contains(body, "sanboot iscsi:10.0.7.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-retry") || strings.Contains(body, "10.0.2.2") {
		t.Errorf("after the move, the script should name rack2 first, then rack6, and not the dead rack1:\n%s", body)
	}
}
