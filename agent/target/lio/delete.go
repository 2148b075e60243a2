package lio

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/sanboot/sanboot/agent/target"
)

// Delete implements target.Driver: disable the portal group (which ends
// its sessions), then remove mapped LUNs, ACLs, LUNs, portals, the portal
// group, the target, and the backstores named after the target with their
// HBA directories. Each step leaves the rest in place, so that a failed
// Delete can be called again. The backing file is never touched.
func (d *Driver) Delete(ctx context.Context, iqn string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete target %s: %w", iqn, err)
	}
	if err := target.ValidateIQN(iqn); err != nil {
		return fmt.Errorf("delete target: %w", err)
	}
	unlock, err := d.locks.Lock(ctx, iqn)
	if err != nil {
		return fmt.Errorf("delete target %s: %w", iqn, err)
	}
	defer unlock()
	if err := d.checkRoot(); err != nil {
		return fmt.Errorf("delete target %s: %w", iqn, err)
	}
	if err := d.delete(ctx, iqn); err != nil {
		return fmt.Errorf("delete target %s: %w", iqn, err)
	}
	return nil
}

func (d *Driver) delete(ctx context.Context, iqn string) error {
	var linked []backstoreRef
	existed := false
	for {
		s, err := d.r.tpg(iqn)
		if err != nil {
			return wrapRead("the target", err)
		}
		if s == nil {
			break
		}
		existed = true
		for _, l := range s.LUNs {
			if l.Backstore != nil {
				linked = append(linked, *l.Backstore)
			}
		}
		if err := d.removeTPG(ctx, s); err != nil {
			return err
		}
		if len(s.Others) == 0 {
			break
		}
	}
	if err := d.remove(ctx, d.p.target(iqn)); err != nil {
		return err
	}
	sc, err := d.r.scanHBAs(iqn)
	if err != nil {
		return wrapRead("the backstores", err)
	}
	for _, ref := range linked {
		if ref.Name != iqn {
			d.log.Info("kept a backstore sanboot did not name: it may serve others", "iqn", iqn, "backstore", ref.String())
		}
	}
	for _, ref := range sc.found {
		if err := d.removeBackstore(ctx, ref); err != nil {
			return err
		}
		existed = true
	}
	// An empty HBA in the target's probe chain is one an interrupted call
	// left between removing the backstore and its HBA.
	chain, err := d.r.probeHBAs(iqn)
	if err != nil {
		return wrapRead("the HBAs", err)
	}
	for _, hbas := range chain.empty {
		for _, h := range hbas {
			if err := d.remove(ctx, d.p.hba(h)); err != nil && !errors.Is(err, syscall.ENOTEMPTY) {
				return err
			}
		}
	}
	if existed {
		d.log.Info("deleted target", "iqn", iqn)
	}
	return nil
}

// removeTPG tears one portal group down in reverse order of building it.
func (d *Driver) removeTPG(ctx context.Context, s *tpgState) error {
	if s.Enabled {
		if err := d.write(ctx, filepath.Join(s.Dir, "enable"), "0"); err != nil {
			return err
		}
	}
	for i := range s.ACLs {
		for j := range s.ACLs[i].Mapped {
			if err := d.removeMapped(ctx, &s.ACLs[i].Mapped[j]); err != nil {
				return err
			}
		}
	}
	for i := range s.ACLs {
		if err := d.remove(ctx, s.ACLs[i].Dir); err != nil {
			return err
		}
	}
	for i := range s.LUNs {
		if err := d.removeLUNDir(ctx, &s.LUNs[i]); err != nil {
			return err
		}
	}
	for _, p := range s.Portals {
		if err := d.remove(ctx, filepath.Join(s.Dir, "np", p.Dir)); err != nil {
			return err
		}
	}
	return d.remove(ctx, s.Dir)
}

// removeLUN removes a LUN of the portal group: first every ACL's mapped
// LUN that points to it (the kernel refuses with EBUSY otherwise), then
// its link to the backstore and its directory.
func (d *Driver) removeLUN(ctx context.Context, s *tpgState, l *lunState) error {
	for i := range s.ACLs {
		for j := range s.ACLs[i].Mapped {
			if m := &s.ACLs[i].Mapped[j]; m.TargetLUN == l.Num || m.TargetLUN == -1 {
				if err := d.removeMapped(ctx, m); err != nil {
					return err
				}
			}
		}
		s.ACLs[i].Mapped = slices.DeleteFunc(s.ACLs[i].Mapped, func(m mappedState) bool { return m.TargetLUN == l.Num || m.TargetLUN == -1 })
	}
	return d.removeLUNDir(ctx, l)
}

func (d *Driver) removeLUNDir(ctx context.Context, l *lunState) error {
	for _, link := range l.Links {
		if err := d.remove(ctx, filepath.Join(l.Dir, link)); err != nil {
			return err
		}
	}
	return d.remove(ctx, l.Dir)
}

func (d *Driver) removeMapped(ctx context.Context, m *mappedState) error {
	for _, link := range m.Links {
		if err := d.remove(ctx, filepath.Join(m.Dir, link)); err != nil {
			return err
		}
	}
	return d.remove(ctx, m.Dir)
}

// removeACL removes an ACL and its mapped LUNs; the kernel ends the
// initiator's session.
func (d *Driver) removeACL(ctx context.Context, a *aclState) error {
	for i := range a.Mapped {
		if err := d.removeMapped(ctx, &a.Mapped[i]); err != nil {
			return err
		}
	}
	return d.remove(ctx, a.Dir)
}

// removeBackstore removes a backstore and then its HBA directory, if no
// other backstore is in it.
func (d *Driver) removeBackstore(ctx context.Context, ref backstoreRef) error {
	if err := d.remove(ctx, d.p.backstore(ref)); err != nil {
		return err
	}
	d.log.Info("removed backstore", "backstore", ref.String())
	others, _, err := d.r.entries(d.p.hba(ref.HBA))
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return wrapRead("the HBA", err)
	}
	if len(others) > 0 {
		return nil
	}
	err = d.remove(ctx, d.p.hba(ref.HBA))
	if errors.Is(err, syscall.ENOTEMPTY) {
		return nil // another backstore arrived meanwhile
	}
	return err
}
