package api

import (
	"fmt"
	"strings"
	"testing"
)

// TestKeyLayout pins the layout: data already in etcd is found by these
// exact keys, so a change here is a storage migration.
func TestKeyLayout(t *testing.T) {
	cases := map[string]string{
		ImageKey("default", "ubuntu"):            "/sanboot/v1/images/default/ubuntu",
		ImagesPrefix("default"):                  "/sanboot/v1/images/default/",
		ImagesPrefix(""):                         "/sanboot/v1/images/",
		ReplicaKey("default", "ubuntu", "s1"):    "/sanboot/v1/imagereplicas/s1/default/ubuntu",
		AgentReplicasPrefix("s1"):                "/sanboot/v1/imagereplicas/s1/",
		ReplicasPrefix():                         "/sanboot/v1/imagereplicas/",
		NodeKey("default", "node-1"):             "/sanboot/v1/nodes/default/node-1",
		NodesPrefix("default"):                   "/sanboot/v1/nodes/default/",
		NodesPrefix(""):                          "/sanboot/v1/nodes/",
		PlacementKey("default", "node-1"):        "/sanboot/v1/placements/default/node-1",
		PlacementsPrefix("default"):              "/sanboot/v1/placements/default/",
		PlacementsPrefix(""):                     "/sanboot/v1/placements/",
		AssignKey("s1", "default", "node-1"):     "/sanboot/v1/assign/s1/default/node-1",
		AssignPrefix("s1"):                       "/sanboot/v1/assign/s1/",
		AssignPrefix(""):                         "/sanboot/v1/assign/",
		NodeStatusKey("default", "node-1", "s1"): "/sanboot/v1/nodestatus/s1/default/node-1",
		AgentNodeStatusPrefix("s1"):              "/sanboot/v1/nodestatus/s1/",
		NodeStatusPrefix():                       "/sanboot/v1/nodestatus/",
		AgentKey("s1"):                           "/sanboot/v1/agents/s1",
		AgentsPrefix():                           "/sanboot/v1/agents/",
		AliveKey("s1"):                           "/sanboot/v1/alive/s1",
		AlivePrefix():                            "/sanboot/v1/alive/",
		MemberKey("cp-1"):                        "/sanboot/v1/members/cp-1",
		MembersPrefix():                          "/sanboot/v1/members/",
		ExportKey("s1", "e1"):                    "/sanboot/v1/exports/s1/e1",
		ExportsPrefix("s1"):                      "/sanboot/v1/exports/s1/",
		ExportsPrefix(""):                        "/sanboot/v1/exports/",
		ElectionPrefix:                           "/sanboot/v1/election/controllers/",
		BootTokenKey("default", "node-1"):        "/sanboot/v1/boottokens/default/node-1",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("key %q, want %q", got, want)
		}
	}
}

// keyKind is one kind of key: how to build a key and its prefixes from up to
// three names, and how to parse it back.
type keyKind struct {
	name string
	// key builds a key from names (scope first).
	key func(n [3]string) string
	// prefixes are the prefixes the key must lie under, narrowest first;
	// the first one is scoped by n[0] (the agent for nodestatus and
	// replicas).
	prefixes func(n [3]string) []string
	// all is the prefix of every key of the kind.
	all string
	// parse returns the names back.
	parse func(key string) ([3]string, error)
	// arity is how many names the key holds.
	arity int
}

func projectName(key string) ([3]string, error) {
	p, n, err := ProjectName(key)
	return [3]string{p, n}, err
}

func lastSegment(key string) ([3]string, error) {
	return [3]string{LastSegment(key)}, nil
}

func keyKinds() []keyKind {
	return []keyKind{
		{"images", func(n [3]string) string { return ImageKey(n[0], n[1]) },
			func(n [3]string) []string { return []string{ImagesPrefix(n[0]), ImagesPrefix("")} },
			ImagesPrefix(""), projectName, 2},
		{"nodes", func(n [3]string) string { return NodeKey(n[0], n[1]) },
			func(n [3]string) []string { return []string{NodesPrefix(n[0]), NodesPrefix("")} },
			NodesPrefix(""), projectName, 2},
		{"placements", func(n [3]string) string { return PlacementKey(n[0], n[1]) },
			func(n [3]string) []string { return []string{PlacementsPrefix(n[0]), PlacementsPrefix("")} },
			PlacementsPrefix(""), projectName, 2},
		{"nodestatus", func(n [3]string) string { return NodeStatusKey(n[1], n[2], n[0]) },
			func(n [3]string) []string { return []string{AgentNodeStatusPrefix(n[0]), NodeStatusPrefix()} },
			NodeStatusPrefix(),
			func(key string) ([3]string, error) {
				p, node, a, err := ParseNodeStatusKey(key)
				return [3]string{a, p, node}, err
			}, 3},
		{"replicas", func(n [3]string) string { return ReplicaKey(n[1], n[2], n[0]) },
			func(n [3]string) []string { return []string{AgentReplicasPrefix(n[0]), ReplicasPrefix()} },
			ReplicasPrefix(),
			func(key string) ([3]string, error) {
				p, i, a, err := ParseReplicaKey(key)
				return [3]string{a, p, i}, err
			}, 3},
		{"assign", func(n [3]string) string { return AssignKey(n[0], n[1], n[2]) },
			func(n [3]string) []string { return []string{AssignPrefix(n[0]), AssignPrefix("")} },
			AssignPrefix(""),
			func(key string) ([3]string, error) {
				a, p, n, err := ParseAssignKey(key)
				return [3]string{a, p, n}, err
			}, 3},
		{"agents", func(n [3]string) string { return AgentKey(n[0]) },
			func([3]string) []string { return []string{AgentsPrefix()} },
			AgentsPrefix(), lastSegment, 1},
		{"alive", func(n [3]string) string { return AliveKey(n[0]) },
			func([3]string) []string { return []string{AlivePrefix()} },
			AlivePrefix(), lastSegment, 1},
		{"members", func(n [3]string) string { return MemberKey(n[0]) },
			func([3]string) []string { return []string{MembersPrefix()} },
			MembersPrefix(), lastSegment, 1},
		{"exports", func(n [3]string) string { return ExportKey(n[0], n[1]) },
			func(n [3]string) []string { return []string{ExportsPrefix(n[0]), ExportsPrefix("")} },
			ExportsPrefix(""),
			func(key string) ([3]string, error) {
				a, id, err := ParseExportKey(key)
				return [3]string{a, id}, err
			}, 2},
	}
}

// keyNames are name triples to build keys from: names that are prefixes of
// each other, the longest names, names with digits and dashes.
var keyNames = [][3]string{
	{"default", "node-1", "storage-1"},
	{"a", "b", "c"},
	{"ab", "b", "c"},
	{"a", "bc", "c"},
	{"a", "b", "cd"},
	{"a-b", "c", "d"},
	{"a", "b-c", "d"},
	{"0", "1", "2"},
	{strings.Repeat("p", 63), strings.Repeat("n", 63), strings.Repeat("a", 63)},
}

func trim(n [3]string, arity int) [3]string {
	for i := arity; i < 3; i++ {
		n[i] = ""
	}
	return n
}

func TestKeysRoundTrip(t *testing.T) {
	for _, k := range keyKinds() {
		for _, n := range keyNames {
			key := k.key(n)
			got, err := k.parse(key)
			if want := trim(n, k.arity); err != nil || got != want {
				t.Errorf("%s: parse(%q) = %q, %v; want %q", k.name, key, got, err, want)
			}
			if !strings.HasPrefix(key, Prefix) || !strings.HasPrefix(key, k.all) {
				t.Errorf("%s: key %q is not under %q", k.name, key, k.all)
			}
			for _, p := range k.prefixes(n) {
				if !strings.HasPrefix(key, p) || key == p {
					t.Errorf("%s: key %q is not strictly under its prefix %q", k.name, key, p)
				}
				if !strings.HasSuffix(p, "/") {
					t.Errorf("%s: prefix %q does not end in '/', so it would match longer names", k.name, p)
				}
			}
			if LastSegment(key) != n[k.arity-1] {
				t.Errorf("%s: LastSegment(%q) = %q, want %q", k.name, key, LastSegment(key), n[k.arity-1])
			}
		}
	}
}

// TestKeysDoNotCollide: a key of one scope never lies under the prefix of
// another scope, even when one name is a prefix of the other ("a" and "ab"),
// and a key of one kind never lies under another kind's prefix ("nodes/"
// and "nodestatus/").
func TestKeysDoNotCollide(t *testing.T) {
	kinds := keyKinds()
	for _, k := range kinds {
		for _, n1 := range keyNames {
			for _, n2 := range keyNames {
				n1, n2 := trim(n1, k.arity), trim(n2, k.arity)
				key1, key2 := k.key(n1), k.key(n2)
				if n1 != n2 && key1 == key2 {
					t.Errorf("%s: %q and %q share key %q", k.name, n1, n2, key1)
				}
				scoped := k.prefixes(n1)[0]
				inScope := n1[0] == n2[0]
				if k.arity > 1 && strings.HasPrefix(key2, scoped) != inScope {
					t.Errorf("%s: key %q under prefix %q is %v, want %v", k.name, key2, scoped, !inScope, inScope)
				}
			}
		}
		for _, other := range kinds {
			if other.name == k.name {
				continue
			}
			for _, n := range keyNames {
				if key := k.key(n); strings.HasPrefix(key, other.all) {
					t.Errorf("%s key %q lies under %s prefix %q", k.name, key, other.name, other.all)
				}
			}
			if strings.HasPrefix(k.all, other.all) {
				t.Errorf("prefix %q lies under %q", k.all, other.all)
			}
		}
		if strings.HasPrefix(ElectionPrefix, k.all) || strings.HasPrefix(k.all, ElectionPrefix) {
			t.Errorf("election prefix %q overlaps %q", ElectionPrefix, k.all)
		}
	}
	// The case the brief calls out, spelt out.
	if strings.HasPrefix(ImageKey("ab", "x"), ImagesPrefix("a")) {
		t.Errorf("ImagesPrefix(a) matches a key of project ab")
	}
	if strings.HasPrefix(AssignKey("storage-10", "p", "n"), AssignPrefix("storage-1")) {
		t.Errorf("AssignPrefix(storage-1) matches an assignment of storage-10")
	}
}

func TestParseKeysRejects(t *testing.T) {
	badProjectName := []string{
		"",
		"nodes/default/node-1",
		"/sanboot/v2/nodes/default/node-1",
		"/sanboot/v1/nodes/default",
		"/sanboot/v1/nodes/default/",
		"/sanboot/v1/nodes//node-1",
		"/sanboot/v1//default/node-1",
		"/sanboot/v1/nodes/default/node-1/",
		"/sanboot/v1/nodes/default/node-1/x",
		NodesPrefix("default"),
		NodesPrefix(""),
		AssignKey("s1", "default", "node-1"),
		ReplicaKey("default", "ubuntu", "s1"),
		AgentKey("s1"),
	}
	for _, key := range badProjectName {
		if p, n, err := ProjectName(key); err == nil {
			t.Errorf("ProjectName(%q) = %q, %q; want an error", key, p, n)
		}
	}
	badAssign := []string{
		"",
		NodeKey("default", "node-1"),
		"/sanboot/v1/assign/s1/default",
		"/sanboot/v1/assign/s1/default/node-1/x",
		"/sanboot/v1/assign/s1/default/",
		"/sanboot/v1/assign//default/node-1",
		"/sanboot/v1/assign/s1//node-1",
		AssignPrefix("s1"),
		"/sanboot/v1/assignx/s1/default/node-1",
		"assign/s1/default/node-1",
	}
	for _, key := range badAssign {
		if a, p, n, err := ParseAssignKey(key); err == nil {
			t.Errorf("ParseAssignKey(%q) = %q, %q, %q; want an error", key, a, p, n)
		}
	}
	badReplica := []string{
		"",
		ImageKey("default", "ubuntu"),
		AssignKey("s1", "default", "node-1"),
		"/sanboot/v1/imagereplicas/s1/default",
		"/sanboot/v1/imagereplicas/s1/default/",
		"/sanboot/v1/imagereplicas/s1//ubuntu",
		"/sanboot/v1/imagereplicas//default/ubuntu",
		"/sanboot/v1/imagereplicas/s1/default/ubuntu/x",
		"/sanboot/v1/replicas/default/ubuntu/s1", // the older layout
		AgentReplicasPrefix("s1"),
	}
	for _, key := range badReplica {
		if p, i, a, err := ParseReplicaKey(key); err == nil {
			t.Errorf("ParseReplicaKey(%q) = %q, %q, %q; want an error", key, p, i, a)
		}
	}
	badStatus := []string{
		"",
		NodeKey("default", "node-1"),
		ReplicaKey("default", "ubuntu", "s1"),
		"/sanboot/v1/nodestatus/default/node-1", // the older layout
		"/sanboot/v1/nodestatus/s1/default/",
		"/sanboot/v1/nodestatus//default/node-1",
		"/sanboot/v1/nodestatus/s1/default/node-1/x",
		AgentNodeStatusPrefix("s1"),
	}
	for _, key := range badStatus {
		if p, n, a, err := ParseNodeStatusKey(key); err == nil {
			t.Errorf("ParseNodeStatusKey(%q) = %q, %q, %q; want an error", key, p, n, a)
		}
	}
	for key, want := range map[string]string{"": "", "/": "", "a": "a", "/a/b": "b", "/a/b/": ""} {
		if got := LastSegment(key); got != want {
			t.Errorf("LastSegment(%q) = %q, want %q", key, got, want)
		}
	}
}

func ExampleAssignKey() {
	key := AssignKey("storage-1", "default", "node-1")
	agent, project, node, _ := ParseAssignKey(key)
	fmt.Println(key)
	fmt.Println(agent, project, node)
	// Output:
	// /sanboot/v1/assign/storage-1/default/node-1
	// storage-1 default node-1
}
