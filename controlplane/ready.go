package controlplane

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sanboot/sanboot/internal/dial"
)

// awaitServing asks the API at addr, over the network like any client
// (with tlsConfig, the member's own certificate), for the standard health
// check until it says SERVING or ctx ends.
func awaitServing(ctx context.Context, addr string, tlsConfig *tls.Config) error {
	conn, err := dial.Dial(dial.Options{Endpoints: []string{addr}, TLS: tlsConfig, Name: "readiness"})
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
