package controlplane

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// awaitServing asks the API at addr, over the network like any client,
// for the standard health check until it says SERVING or ctx ends.
func awaitServing(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("readiness check of the API at %s: %w", addr, err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the API at %s did not answer its health check: %w", addr, ctx.Err())
		case <-time.After(wait):
		}
	}
}
