package backup_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/backup"
	"github.com/sanboot/sanboot/controlplane/internal/fakeagent"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/eventually"
)

// Backup, wipe the data directory, restore: every object is back with the
// same content, what was written after the backup is not, and the agent
// (a FAKE one, kept running throughout) converges without any command.
func TestBackupWipeRestore(t *testing.T) {
	cfg := cptest.MemberConfig(t, "cp1")
	cfg.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	endpoint := cfg.Member.Client.ListenURLs[0].String()
	stop := cptest.RunMember(t, cfg)

	ctx := context.Background()
	conn, err := grpc.NewClient(cfg.APIListen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := sanbootv1.NewSanbootClient(conn)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	actx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	a, err := fakeagent.Start(actx, cli, "a", 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutImage(ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: "img", Labels: map[string]string{"os": "debian"}}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20}}}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetReplica(ctx, "default", "img", api.ReplicaReady); err != nil {
		t.Fatal(err)
	}
	putNode := func(name string) {
		t.Helper()
		if _, err := c.PutNode(ctx, &sanbootv1.PutNodeRequest{Node: &sanbootv1.Node{
			Metadata: &sanbootv1.ObjectMeta{Name: name}, Spec: &sanbootv1.NodeSpec{Image: "img"}}}); err != nil {
			t.Fatal(err)
		}
	}
	putNode("n1")
	putNode("n2")
	eventually.True(t, "n1 and n2 Ready", func() bool { return phase(c, "n1") == api.PhaseReady && phase(c, "n2") == api.PhaseReady }, eventually.Within(90*time.Second))
	before := records(t, cli)
	for _, k := range []string{api.NodeKey("default", "n1"), api.ImageKey("default", "img"), api.AssignKey("a", "default", "n2"), api.AgentKey("a")} {
		if _, ok := before[k]; !ok {
			t.Fatalf("test setup: %s missing from %v", k, keys(before))
		}
	}

	file := filepath.Join(t.TempDir(), "sanboot.snapshot")
	info, err := backup.Save(ctx, []string{endpoint}, nil, file)
	if err != nil {
		t.Fatal(err)
	}
	if info.Revision <= 0 || info.Keys == 0 || len(info.SHA256) != 64 {
		t.Errorf("snapshot info %+v", info)
	}
	if _, err := backup.Save(ctx, []string{endpoint}, nil, file); err == nil {
		t.Error("Save overwrote an existing file")
	}
	putNode("n3") // after the backup: gone after the restore

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(cfg.Member.DataDir); err != nil {
		t.Fatal(err)
	}
	rc := backup.RestoreConfig{Snapshot: file, DataDir: cfg.Member.DataDir, Name: "cp1",
		PeerURLs: []string{cfg.Member.Peer.ListenURLs[0].String()}, InitialCluster: "cp1=" + cfg.Member.Peer.ListenURLs[0].String()}
	if err := backup.Restore(rc); err != nil {
		t.Fatal(err)
	}
	if err := backup.Restore(rc); err == nil {
		t.Error("Restore overwrote a member")
	}
	stop = cptest.RunMember(t, cfg)
	defer stop()

	eventually.True(t, "the API back with n1 and n2 Ready", func() bool { return phase(c, "n1") == api.PhaseReady && phase(c, "n2") == api.PhaseReady }, eventually.Within(90*time.Second))
	if _, err := c.GetNode(ctx, &sanbootv1.GetRequest{Name: "n3"}); err == nil {
		t.Error("n3, written after the backup, is there after the restore")
	}
	after := records(t, cli)
	for k, v := range before {
		if got, ok := after[k]; !ok {
			t.Errorf("%s lost in the restore", k)
		} else if !bytes.Equal(got, v) {
			t.Errorf("%s changed in the restore", k)
		}
	}
	// The agent, never restarted, still works on the restored state: a
	// new node goes Ready.
	putNode("n4")
	eventually.True(t, "n4 Ready on the restored control plane", func() bool { return phase(c, "n4") == api.PhaseReady }, eventually.Within(90*time.Second))
	stopAgent()
	cli.Close()
}

func phase(c sanbootv1.SanbootClient, name string) string {
	n, err := c.GetNode(context.Background(), &sanbootv1.GetRequest{Name: name})
	if err != nil {
		return ""
	}
	return n.GetStatus().GetPhase()
}

// records are the keys under api.Prefix that have no lease (the leased
// ones, liveness and member registrations, are written anew).
func records(t *testing.T, cli *clientv3.Client) map[string][]byte {
	t.Helper()
	resp, err := cli.Get(context.Background(), api.Prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, kv := range resp.Kvs {
		if kv.Lease == 0 {
			out[string(kv.Key)] = kv.Value
		}
	}
	return out
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
