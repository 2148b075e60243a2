package state

import "log/slog"

// LogValue makes a Ref log as its project and name, e.g.
// node.project=default node.name=web-1 (text) or
// "node":{"project":"default","name":"web-1"} (JSON).
func (r Ref) LogValue() slog.Value {
	return slog.GroupValue(slog.String("project", r.Project), slog.String("name", r.Name))
}
