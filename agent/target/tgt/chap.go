package tgt

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/sanboot/sanboot/agent/target"
)

// ErrAccountConflict is returned (wrapped) by Ensure when a CHAP user name
// the target asks for is an account the target cannot own: bound to
// another target, or left in tgtd by someone else.
var ErrAccountConflict = errors.New("CHAP user name belongs to another tgtd account")

// checkCHAP refuses, before anything changes, a CHAP user name that tg
// cannot own. It loads st.accounts.
func (d *Driver) checkCHAP(ctx context.Context, st *state, tg *tgtTarget, chap *target.CHAP) error {
	if chap == nil {
		return nil
	}
	users := []string{chap.Incoming.User}
	if chap.Mutual != nil {
		users = append(users, chap.Mutual.User)
	}
	for _, u := range users {
		if o := st.boundElsewhere(u, tg.TID); o != nil {
			return fmt.Errorf("%w: CHAP user %q is bound to target %s (tid %d); tgtd's accounts are global (one secret per user name), "+
				"so every target needs its own CHAP user names", ErrAccountConflict, u, o.IQN, o.TID)
		}
	}
	accounts, err := d.showAccounts(ctx)
	if err != nil {
		return err
	}
	st.accounts = map[string]bool{}
	for _, a := range accounts {
		st.accounts[a] = true
	}
	for _, u := range users {
		if _, ours := d.accounts[u]; st.accounts[u] && !tg.hasAccount(u) && !ours {
			return fmt.Errorf("%w: tgtd has an account %q bound to no target that sanboot did not create; "+
				"delete it (tgtadm -C %d --lld iscsi --mode account --op delete --user %s) or choose another CHAP user name",
				ErrAccountConflict, u, d.adm.controlPort, u)
		}
	}
	return nil
}

// knows reports whether user is an account this driver created with secret.
func (d *Driver) knows(user string, secret target.Secret) bool {
	a, ok := d.accounts[user]
	if !ok || !a.known {
		return false
	}
	fp := d.fingerprint(secret)
	return hmac.Equal(a.fp[:], fp[:])
}

// convergeCHAP binds exactly the wanted accounts to tg: the incoming one
// (CHAP) and the outgoing one (mutual CHAP). checkCHAP has run.
//
// tgtd 1.0.85 keeps a target's incoming accounts in slots and prints them
// up to their count: unbinding any but the last leaves a hole that crashes
// tgtd at the next "--op show". So incoming accounts are only ever removed
// from the end, and replacing the only one passes through "no incoming
// account", which means "no CHAP": the ACL is closed for that moment.
func (d *Driver) convergeCHAP(ctx context.Context, st *state, tg *tgtTarget, chap *target.CHAP) error {
	var wantIn, wantOut string
	var inSecret, outSecret target.Secret
	if chap != nil {
		wantIn, inSecret = chap.Incoming.User, chap.Incoming.Secret
		if chap.Mutual != nil {
			wantOut, outSecret = chap.Mutual.User, chap.Mutual.Secret
		}
	}

	keep := 0
	if wantIn != "" && len(tg.InAccounts) > 0 && tg.InAccounts[0] == wantIn && d.knows(wantIn, inSecret) {
		keep = 1
	}
	if len(tg.InAccounts) > keep {
		if wantIn != "" && keep == 0 {
			if err := d.closeACL(ctx, tg); err != nil {
				return err
			}
		}
		if err := d.removeIncoming(ctx, st, tg, keep); err != nil {
			return err
		}
	}
	if wantIn != "" && keep == 0 {
		if err := d.ensureAccount(ctx, st, tg, wantIn, inSecret); err != nil {
			return err
		}
		if _, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "account", "--op", "bind",
			"--tid", strconv.Itoa(tg.TID), "--user", wantIn); err != nil {
			return fmt.Errorf("bind CHAP user %q: %w", wantIn, err)
		}
		tg.InAccounts = append(tg.InAccounts, wantIn)
		d.log.Info("bound CHAP user", "iqn", tg.IQN, "user", wantIn)
	}

	if tg.OutAccount != "" && (tg.OutAccount != wantOut || !d.knows(wantOut, outSecret)) {
		if err := d.removeOutgoing(ctx, st, tg); err != nil {
			return err
		}
	}
	if wantOut != "" && tg.OutAccount == "" {
		if err := d.ensureAccount(ctx, st, tg, wantOut, outSecret); err != nil {
			return err
		}
		if _, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "account", "--op", "bind",
			"--tid", strconv.Itoa(tg.TID), "--user", wantOut, "--outgoing"); err != nil {
			return fmt.Errorf("bind mutual CHAP user %q: %w", wantOut, err)
		}
		tg.OutAccount = wantOut
		d.log.Info("bound mutual CHAP user", "iqn", tg.IQN, "user", wantOut)
	}
	return nil
}

// ensureAccount makes user an account with secret, creating it again when
// it exists with a secret the driver does not know. The account is not
// among tg's incoming accounts (convergeCHAP removed them), so deleting it
// cannot leave a hole.
func (d *Driver) ensureAccount(ctx context.Context, st *state, tg *tgtTarget, user string, secret target.Secret) error {
	if st.accounts[user] {
		if d.knows(user, secret) {
			return nil
		}
		if err := d.deleteAccount(ctx, st, tg, user); err != nil {
			return err
		}
	}
	d.accounts[user] = account{} // ours from now on, even if "new" fails half-way
	if _, err := d.adm.run(ctx, []string{secret.Reveal()}, "--lld", "iscsi", "--mode", "account", "--op", "new",
		"--user", user, "--password="+secret.Reveal()); err != nil {
		return fmt.Errorf("create CHAP account %q: %w", user, err)
	}
	d.accounts[user] = account{fp: d.fingerprint(secret), known: true}
	st.accounts[user] = true
	return nil
}

// owned reports whether user is bound to no target but tg: then it is tg's
// to delete.
func (st *state) owned(user string, tg *tgtTarget) bool {
	return st.boundElsewhere(user, tg.TID) == nil
}

// removeIncoming removes tg's incoming accounts after the first keep ones,
// last first; accounts tg owns are deleted, others only unbound.
func (d *Driver) removeIncoming(ctx context.Context, st *state, tg *tgtTarget, keep int) error {
	for len(tg.InAccounts) > keep {
		user := tg.InAccounts[len(tg.InAccounts)-1]
		if st.owned(user, tg) {
			if err := d.deleteAccount(ctx, st, tg, user); err != nil {
				return err
			}
		} else {
			if _, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "account", "--op", "unbind",
				"--tid", strconv.Itoa(tg.TID), "--user", user); err != nil && !said(err, msgNoAccount) {
				return fmt.Errorf("unbind CHAP user %q: %w", user, err)
			}
			tg.InAccounts = tg.InAccounts[:len(tg.InAccounts)-1]
		}
		d.log.Info("removed CHAP user", "iqn", tg.IQN, "user", user)
	}
	return nil
}

// removeOutgoing removes tg's outgoing account, deleting it if tg owns it.
func (d *Driver) removeOutgoing(ctx context.Context, st *state, tg *tgtTarget) error {
	user := tg.OutAccount
	if user == "" {
		return nil
	}
	if st.owned(user, tg) && !slices.Contains(tg.InAccounts, user) {
		if err := d.deleteAccount(ctx, st, tg, user); err != nil {
			return err
		}
	} else {
		if _, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "account", "--op", "unbind",
			"--tid", strconv.Itoa(tg.TID), "--user", user, "--outgoing"); err != nil && !said(err, msgNoAccount) {
			return fmt.Errorf("unbind mutual CHAP user %q: %w", user, err)
		}
		tg.OutAccount = ""
	}
	d.log.Info("removed mutual CHAP user", "iqn", tg.IQN, "user", user)
	return nil
}

// deleteAccount deletes user from tgtd, which unbinds it from every target.
// The caller makes sure it is bound to no other target and, if it is an
// incoming account of tg, that it is the last one.
func (d *Driver) deleteAccount(ctx context.Context, st *state, tg *tgtTarget, user string) error {
	if _, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "account", "--op", "delete",
		"--user", user); err != nil && !said(err, msgNoAccount) {
		return fmt.Errorf("delete CHAP account %q: %w", user, err)
	}
	delete(d.accounts, user)
	if st.accounts != nil {
		delete(st.accounts, user)
	}
	tg.InAccounts = slices.DeleteFunc(tg.InAccounts, func(u string) bool { return u == user })
	if tg.OutAccount == user {
		tg.OutAccount = ""
	}
	return nil
}
