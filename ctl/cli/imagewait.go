package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// Polling bounds of waitImage. The API has no watch of images, so a wait
// for an image polls GetImage, quickly at first (a snapshot or a reflinked
// copy is usually Ready within a second), then every imagePollMax.
const (
	imagePollMin = 100 * time.Millisecond
	imagePollMax = 2 * time.Second
)

// waitImage polls image name of project until it is Ready for its current
// spec, and returns it. Progress (phase and the replicas' messages) goes to
// stderr when it changes. A Failed image ends the wait (exit 1), a deleted
// one too (exit 4), and ctx's deadline is a timeout (exit 3).
func (s *session) waitImage(ctx context.Context, project, name string, timeout time.Duration) (*sanbootv1.Image, error) {
	c, err := s.api()
	if err != nil {
		return nil, err
	}
	last := ""
	backoff := imagePollMin
	for {
		im, err := c.GetImage(ctx, &sanbootv1.GetRequest{Project: project, Name: name})
		switch {
		case err == nil:
			line := imageProgress(im)
			if line != last {
				fmt.Fprintf(s.env.Stderr, "image/%s: %s\n", name, line)
				last = line
			}
			ready, err := imageReady(im)
			if err != nil {
				return im, err
			}
			if ready {
				return im, nil
			}
		case errors.Is(ctx.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
			return nil, imageTimeout(name, last, timeout)
		case ctx.Err() != nil:
			return nil, errors.New("interrupted")
		case status.Code(err) == codes.NotFound:
			return nil, withCode(ExitNotFound, fmt.Errorf("image/%s was deleted while waiting for it to be ready", name))
		case status.Code(err) != codes.Unavailable:
			return nil, s.rpcError(err)
		}
		// Unavailable: the client fails over to another member; poll again.
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, imageTimeout(name, last, timeout)
			}
			return nil, errors.New("interrupted")
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, imagePollMax)
	}
}

func imageTimeout(name, last string, timeout time.Duration) error {
	what := "image/" + name
	if last != "" {
		what += " (last seen " + last + ")"
	}
	return withCode(ExitTimeout, fmt.Errorf("timed out after %s waiting for %s to be ready; raise --timeout to wait longer", timeout, what))
}

// imageReady says whether im is Ready for its current spec, or returns an
// error when waiting cannot help: a replica Failed for the current spec.
func imageReady(im *sanbootv1.Image) (bool, error) {
	gen, st := im.GetMetadata().GetGeneration(), im.GetStatus()
	switch st.GetPhase() {
	case api.ReplicaReady:
		for _, r := range st.GetReplicas() {
			if r.GetPhase() == api.ReplicaReady && r.GetObservedGeneration() >= gen {
				return true, nil
			}
		}
	case api.ReplicaFailed:
		var msgs []string
		for _, r := range st.GetReplicas() {
			if r.GetPhase() == api.ReplicaFailed && r.GetObservedGeneration() >= gen {
				msgs = append(msgs, fmt.Sprintf("on agent %s: %s", r.GetAgent(), orNone(r.GetMessage())))
			}
		}
		if len(msgs) > 0 {
			return false, fmt.Errorf("image/%s failed %s (the agents keep retrying)", im.GetMetadata().GetName(), strings.Join(msgs, "; "))
		}
	}
	return false, nil
}

// imageProgress is one line about where an image is: its phase and what
// the agents that do not hold it yet say.
func imageProgress(im *sanbootv1.Image) string {
	st := im.GetStatus()
	line := orNone(st.GetPhase())
	var parts []string
	for _, r := range st.GetReplicas() {
		if r.GetPhase() == api.ReplicaReady {
			continue
		}
		p := "agent " + r.GetAgent() + " " + orNone(r.GetPhase())
		if r.GetMessage() != "" {
			p += " (" + r.GetMessage() + ")"
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 && len(st.GetReplicas()) == 0 && st.GetPhase() != api.ReplicaReady {
		parts = append(parts, "no agent has reported yet")
	}
	if len(parts) > 0 {
		line += ": " + strings.Join(parts, "; ")
	}
	return line
}
