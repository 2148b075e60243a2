package boot

import (
	"strings"
	"testing"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// Scripts that fetch again fall back to the other members' boot servers,
// in order, when theirs does not answer; bases that are not http(s) URLs
// of safe characters, and this server's own, are left out.
func TestFallbacksToOtherMembers(t *testing.T) {
	others := []string{"http://10.99.0.2:8080", "https://cp3.example:8443/", "ftp://10.99.0.4", "http://bad$host", "http://10.99.0.1:8080"}
	s := Settings{URL: "http://10.99.0.1:8080"}

	generic := s.GenericWith(others)
	want := "chain --replace --autofree http://10.99.0.1:8080/boot?mac=${net0/mac:hexhyp}&platform=${platform} ||" +
		" chain --replace --autofree http://10.99.0.2:8080/boot?mac=${net0/mac:hexhyp}&platform=${platform} ||" +
		" chain --replace --autofree https://cp3.example:8443/boot?mac=${net0/mac:hexhyp}&platform=${platform} || goto sanboot-retry\n"
	if !strings.Contains(generic, want) {
		t.Errorf("generic script:\n%s\nwant the line\n%s", generic, want)
	}
	if s.GenericWith(nil) != s.Generic() || !strings.Contains(s.Generic(), "platform=${platform} || goto sanboot-retry\n") {
		t.Errorf("generic script without other members:\n%s", s.Generic())
	}

	wait := s.RenderWith(WaitPlan("the boot server is starting"), s.MACPath("52-54-00-00-00-01", ""), others)
	want = "chain --replace --autofree http://10.99.0.1:8080/boot?mac=52-54-00-00-00-01 ||" +
		" chain --replace --autofree http://10.99.0.2:8080/boot?mac=52-54-00-00-00-01 ||" +
		" chain --replace --autofree https://cp3.example:8443/boot?mac=52-54-00-00-00-01 || goto sanboot-retry\n"
	if !strings.Contains(wait, want) {
		t.Errorf("wait script:\n%s\nwant the line\n%s", wait, want)
	}
}

// The boot server reads the other members' boot URLs from their
// registrations.
func TestServerFallsBackToRegisteredMembers(t *testing.T) {
	e := startBoot(t, Settings{URL: "http://10.99.0.1:8080"})
	e.put(api.MemberKey("cp1"), &sanbootv1.Member{Name: "cp1", BootUrl: "http://10.99.0.1:8080"})
	e.put(api.MemberKey("cp2"), &sanbootv1.Member{Name: "cp2", BootUrl: "http://10.99.0.2:8080"})
	e.put(api.MemberKey("cp3"), &sanbootv1.Member{Name: "cp3"}) // no boot server
	body := e.await("/boot.ipxe", "chain --replace --autofree http://10.99.0.2:8080/boot?mac=")
	if strings.Count(body, "chain --replace --autofree") != 2 {
		t.Errorf("generic script tries %d servers, want 2 (this one, cp2):\n%s", strings.Count(body, "chain --replace --autofree"), body)
	}
}
