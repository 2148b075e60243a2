package target

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/sanboot/sanboot/api"
)

// redacted is what a Secret prints instead of itself.
const redacted = "[redacted]"

// Secret is a CHAP secret. Every way of printing it (fmt verbs, slog,
// encoding/json and encoding/text) prints "[redacted]"; only Reveal returns
// the value, for the driver that hands it to the target system. The value
// sits behind a pointer, so that even reflection through an unexported field
// finds an address, not the secret.
type Secret struct{ p *string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{p: &s} }

// Reveal returns the secret itself. Call it only to hand the secret to the
// target system.
func (s Secret) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// IsZero reports whether the secret is empty or unset.
func (s Secret) IsZero() bool { return s.Reveal() == "" }

// Equal compares two secrets in constant time.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s.Reveal()), []byte(o.Reveal())) == 1
}

func (s Secret) String() string {
	if s.IsZero() {
		return "[empty]"
	}
	return redacted
}

// GoString keeps %#v from printing the secret.
func (s Secret) GoString() string { return s.String() }

// Format prints String for every fmt verb.
func (s Secret) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(s.String())) }

// LogValue keeps log/slog from printing the secret.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText keeps encoding/json and friends from printing the secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Credentials are a CHAP user name and its secret.
type Credentials struct {
	User   string
	Secret Secret
}

func (c Credentials) String() string { return c.User + ":" + c.Secret.String() }

// CHAP is the authentication a target requires: the initiator proves it
// knows Incoming; with Mutual set, the target proves it knows Mutual too.
type CHAP struct {
	Incoming Credentials
	Mutual   *Credentials
}

// MutualUser is the mutual CHAP user name, or "" without mutual CHAP.
func (c *CHAP) MutualUser() string {
	if c == nil || c.Mutual == nil {
		return ""
	}
	return c.Mutual.User
}

// String names the users, never the secrets.
func (c CHAP) String() string {
	if c.Mutual == nil {
		return "user " + strconv.Quote(c.Incoming.User)
	}
	return "user " + strconv.Quote(c.Incoming.User) + ", mutual user " + strconv.Quote(c.Mutual.User)
}

// GoString is String, so that %#v prints no secret either.
func (c CHAP) GoString() string { return c.String() }

// Format prints String for every fmt verb.
func (c CHAP) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue logs the users only.
func (c CHAP) LogValue() slog.Value { return slog.StringValue(c.String()) }

func (c CHAP) clone() CHAP {
	if c.Mutual != nil {
		m := *c.Mutual
		c.Mutual = &m
	}
	return c
}

func (c CHAP) validate() error {
	errs := validateCreds("target.chap.incoming", c.Incoming)
	if c.Mutual != nil {
		errs = append(errs, validateCreds("target.chap.mutual", *c.Mutual)...)
		if !c.Incoming.Secret.IsZero() && c.Incoming.Secret.Equal(c.Mutual.Secret) {
			errs = append(errs, &api.FieldError{Field: "target.chap.mutual.secret",
				Msg: "must differ from the incoming secret (RFC 3720 §8.2.1 forbids one secret for both directions)"})
		}
	}
	return errors.Join(errs...)
}

func validateCreds(field string, c Credentials) []error {
	var errs []error
	if c.User == "" || len(c.User) > maxUser || !userRe.MatchString(c.User) {
		errs = append(errs, &api.FieldError{Field: field + ".user", Value: c.User,
			Msg: fmt.Sprintf("must be 1 to %d characters of A-Z a-z 0-9 . _ : @ -", maxUser)})
	}
	s := c.Secret.Reveal()
	// The value of a secret never goes into an error: only its length.
	switch {
	case len(s) < minSecret || len(s) > maxSecret:
		errs = append(errs, &api.FieldError{Field: field + ".secret",
			Msg: fmt.Sprintf("is %d characters long; CHAP secrets must be %d to %d characters", len(s), minSecret, maxSecret)})
	case strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r >= 0x7f }):
		errs = append(errs, &api.FieldError{Field: field + ".secret",
			Msg: "must be printable ASCII without spaces"})
	}
	return errs
}
