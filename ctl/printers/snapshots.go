package printers

import (
	"fmt"
	"slices"
	"strings"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/bytesize"
)

// Snapshots prints images made from snapshots.
func (p Printer) Snapshots(images []*sanbootv1.Image) error {
	slices.SortFunc(images, func(a, b *sanbootv1.Image) int { return CompareMeta(a.GetMetadata(), b.GetMetadata()) })
	if p.Structured() {
		return p.StructuredOut("images", ProtoList(images))
	}
	wide := p.Format == FormatWide
	header := p.WithProject("NAME", "NODE", "PARENT", "SIZE", "PHASE", "AGE")
	if wide {
		header = append(header, "SOURCE", "AGENTS", "REPLICAS", "USED-BY")
	}
	rows := make([][]string, 0, len(images))
	for _, im := range images {
		m, spec, st := im.GetMetadata(), im.GetSpec(), im.GetStatus()
		row := p.ProjectCell(m.GetProject(), m.GetName(), OrNone(spec.GetSource().GetSnapshot().GetNode()), OrNone(spec.GetParent()),
			bytesize.Format(spec.GetSizeBytes()), OrNone(st.GetPhase()), Age(p.Now, m.GetCreateTime()))
		if wide {
			ready := readyReplicas(st)
			total := max(len(spec.GetAgents()), len(st.GetReplicas()))
			row = append(row, DescribeSource(spec.GetSource()), OrNone(strings.Join(spec.GetAgents(), ",")),
				fmt.Sprintf("%d/%d", ready, total), OrNone(strings.Join(st.GetUsedBy(), ",")))
		}
		rows = append(rows, row)
	}
	return p.Table(header, rows)
}
