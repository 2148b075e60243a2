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
	"github.com/sanboot/sanboot/ctl/printers"
)

// Polling bounds of waitImagePoll, the wait used against a control plane
// too old to serve WatchImages.
const (
	imagePollMin = 100 * time.Millisecond
	imagePollMax = 2 * time.Second
)

// waitImage watches image name of project (WatchImages) until it is Ready
// for its current spec, and returns it. Progress (phase and the replicas'
// messages) goes to stderr when it changes. A Failed image ends the wait
// (exit 1), a deleted one too (exit 4), and ctx's deadline is a timeout
// (exit 3). A broken stream is opened again; a control plane without
// WatchImages is polled instead.
func (s *session) waitImage(ctx context.Context, project, name string, timeout time.Duration) (*sanbootv1.Image, error) {
	c, err := s.api()
	if err != nil {
		return nil, err
	}
	last := ""
	backoff := imagePollMin
	for {
		im, done, err := s.waitImageOnce(ctx, c, project, name, &last)
		if done {
			return im, err
		}
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
			return nil, imageTimeout(name, last, timeout)
		case ctx.Err() != nil:
			return nil, errors.New("interrupted")
		case status.Code(err) == codes.Unimplemented:
			return s.waitImagePoll(ctx, c, project, name, timeout, last)
		case !retryable(err):
			return nil, s.rpcError(err)
		}
		if err := pause(ctx, &backoff, func() error { return imageTimeout(name, last, timeout) }); err != nil {
			return nil, err
		}
	}
}

// waitImageOnce follows one WatchImages stream. done says the wait is over
// (with im and err as its result); otherwise err is why the stream broke.
func (s *session) waitImageOnce(ctx context.Context, c sanbootv1.SanbootClient, project, name string, last *string) (im *sanbootv1.Image, done bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.WatchImages(ctx, &sanbootv1.WatchImagesRequest{Project: project, Names: []string{name}})
	if err != nil {
		return nil, false, err
	}
	seen := false
	for {
		ev, err := stream.Recv()
		if err != nil {
			return nil, false, err
		}
		switch ev.GetType() {
		case sanbootv1.NodeEvent_TYPE_SYNCED:
			if !seen {
				return nil, true, withCode(ExitNotFound, fmt.Errorf("image/%s was deleted while waiting for it to be ready", name))
			}
			continue
		case sanbootv1.NodeEvent_TYPE_DELETED:
			return nil, true, withCode(ExitNotFound, fmt.Errorf("image/%s was deleted while waiting for it to be ready", name))
		}
		if ev.GetImage() == nil {
			continue
		}
		seen = true
		im := ev.GetImage()
		if line := imageProgress(im); line != *last {
			fmt.Fprintf(s.env.Stderr, "image/%s: %s\n", name, line)
			*last = line
		}
		ready, err := imageReady(im)
		if err != nil || ready {
			return im, true, err
		}
	}
}

// waitImagePoll is waitImage by polling GetImage, quickly at first (a
// snapshot or a reflinked copy is usually Ready within a second), then
// every imagePollMax.
func (s *session) waitImagePoll(ctx context.Context, c sanbootv1.SanbootClient, project, name string, timeout time.Duration, last string) (*sanbootv1.Image, error) {
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
		if err := pause(ctx, &backoff, func() error { return imageTimeout(name, last, timeout) }); err != nil {
			return nil, err
		}
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
				msgs = append(msgs, fmt.Sprintf("on agent %s: %s", r.GetAgent(), printers.OrNone(r.GetMessage())))
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
	line := printers.OrNone(st.GetPhase())
	var parts []string
	for _, r := range st.GetReplicas() {
		if r.GetPhase() == api.ReplicaReady {
			continue
		}
		p := "agent " + r.GetAgent() + " " + printers.OrNone(r.GetPhase())
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

// pause waits *backoff, then doubles it up to imagePollMax. When ctx ends
// first it returns timeout() (deadline) or "interrupted".
func pause(ctx context.Context, backoff *time.Duration, timeout func() error) error {
	select {
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return timeout()
		}
		return errors.New("interrupted")
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, imagePollMax)
	return nil
}
