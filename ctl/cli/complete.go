package cli

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// completionTimeout bounds the API call behind a shell completion: a shell
// waiting on a dead control plane is worse than no suggestions.
const completionTimeout = 3 * time.Second

// completeNodes suggests names of nodes in the current project.
func (s *session) completeNodes(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return s.completeNames(cmd, args, toComplete, func(ctx context.Context, c sanbootv1.SanbootClient, project string) ([]string, error) {
		resp, err := listNodes(ctx, c, &sanbootv1.ListRequest{Project: project})
		var names []string
		for _, n := range resp.GetNodes() {
			names = append(names, n.GetMetadata().GetName())
		}
		return names, err
	})
}

// completeImages suggests names of images in the current project.
func (s *session) completeImages(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return s.completeNames(cmd, args, toComplete, func(ctx context.Context, c sanbootv1.SanbootClient, project string) ([]string, error) {
		resp, err := listImages(ctx, c, &sanbootv1.ListRequest{Project: project})
		var names []string
		for _, im := range resp.GetImages() {
			names = append(names, im.GetMetadata().GetName())
		}
		return names, err
	})
}

func (s *session) completeNames(cmd *cobra.Command, args []string, toComplete string,
	list func(context.Context, sanbootv1.SanbootClient, string) ([]string, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	c, project, err := s.apiAndProject()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	names, err := list(ctx, c, project)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []cobra.Completion
	for _, n := range names {
		if strings.HasPrefix(n, toComplete) && !slices.Contains(args, n) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
