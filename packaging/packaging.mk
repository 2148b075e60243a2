# packaging.mk: `make install`, `make uninstall` and `make deb`, included by
# the Makefile. Variables follow the GNU conventions:
#
#   make build && sudo make install                  # into /usr/local
#   make install PREFIX=/usr DESTDIR=/tmp/stage      # staged, as a packager does
#   sudo make uninstall                              # same PREFIX as install
#
# install writes: the three binaries, the systemd units (ExecStart pointing
# at BINDIR), the commented default configurations under SYSCONFDIR/sanboot
# (never over an existing one: an operator's edits stay), man pages from
# docs/man if there are any, and sanbootctl's bash, zsh and fish
# completions. uninstall removes exactly those files, a configuration only
# while it is still the shipped default, and never a data directory
# (/var/lib/sanboot-controlplane, /var/lib/sanboot). Neither runs
# systemctl: after a real install, `systemctl daemon-reload`.

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
DATAROOTDIR ?= $(PREFIX)/share
MANDIR ?= $(DATAROOTDIR)/man
# systemd reads units from /lib/systemd/system (packages) and
# /usr/local/lib/systemd/system (local installs).
UNITDIR ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
BASHCOMPDIR ?= $(DATAROOTDIR)/bash-completion/completions
ZSHCOMPDIR ?= $(DATAROOTDIR)/zsh/vendor-completions
FISHCOMPDIR ?= $(DATAROOTDIR)/fish/vendor_completions.d

PROGRAMS := sanboot-controlplane sanboot-agent sanbootctl
UNITS := sanboot-controlplane.service sanboot-agent.service
CONFIGS := controlplane.yaml agent.yaml
MANPAGES := $(wildcard docs/man/*.[1-8])
# v2.46 and later need modules (go.digitalxero.dev/...) the Go module proxy
# does not serve; v2.45.0 builds from the proxy alone.
NFPM_VERSION := v2.45.0
# The package's version: the latest tag, else 0.0.0 with the commit.
DEB_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null); v=$${v#v}; echo $${v:-0.0.0~git$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)} | tr - '~')
DEB_ARCH ?= $(shell $(GO) env GOARCH)

.PHONY: install uninstall deb units

# units renders the unit templates for BINDIR and SYSCONFDIR into $(BIN)/units.
units:
	@mkdir -p $(BIN)/units
	@for u in $(UNITS); do \
		sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' packaging/systemd/$$u.in >$(BIN)/units/$$u; \
	done

install: units ## install binaries, units, configs, man pages, completions (PREFIX, DESTDIR)
	@for p in $(PROGRAMS); do [ -x $(BIN)/$$p ] || { echo "install: $(BIN)/$$p is missing: run 'make build' first"; exit 1; }; done
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/sanboot \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0755 $(addprefix $(BIN)/,$(PROGRAMS)) $(DESTDIR)$(BINDIR)/
	install -m 0644 $(addprefix $(BIN)/units/,$(UNITS)) $(DESTDIR)$(UNITDIR)/
	@for c in $(CONFIGS); do \
		if [ -e $(DESTDIR)$(SYSCONFDIR)/sanboot/$$c ]; then echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/sanboot/$$c"; \
		else echo "install -m 0644 packaging/etc/$$c $(DESTDIR)$(SYSCONFDIR)/sanboot/$$c"; install -m 0644 packaging/etc/$$c $(DESTDIR)$(SYSCONFDIR)/sanboot/$$c; fi; \
	done
	@for m in $(MANPAGES); do s=$${m##*.}; install -d $(DESTDIR)$(MANDIR)/man$$s; \
		echo "install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/"; install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	$(BIN)/sanbootctl completion bash >$(DESTDIR)$(BASHCOMPDIR)/sanbootctl
	$(BIN)/sanbootctl completion zsh >$(DESTDIR)$(ZSHCOMPDIR)/_sanbootctl
	$(BIN)/sanbootctl completion fish >$(DESTDIR)$(FISHCOMPDIR)/sanbootctl.fish
	@echo "installed; now: systemctl daemon-reload (nothing was enabled or started)"

uninstall: ## remove what install wrote (never the data directories)
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(PROGRAMS)) $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) \
		$(DESTDIR)$(BASHCOMPDIR)/sanbootctl $(DESTDIR)$(ZSHCOMPDIR)/_sanbootctl $(DESTDIR)$(FISHCOMPDIR)/sanbootctl.fish
	@for m in $(MANPAGES); do s=$${m##*.}; echo "rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}"; rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}; done
	@for c in $(CONFIGS); do f=$(DESTDIR)$(SYSCONFDIR)/sanboot/$$c; \
		if [ ! -e $$f ]; then :; elif cmp -s packaging/etc/$$c $$f; then echo "rm -f $$f"; rm -f $$f; \
		else echo "uninstall: keeping $$f: it differs from the shipped default"; fi; \
	done
	-rmdir $(DESTDIR)$(SYSCONFDIR)/sanboot 2>/dev/null || true

# deb builds bin/sanboot_VERSION_ARCH.deb with nfpm (run through the Go
# module proxy at a pinned version; nothing is installed).
deb: build ## build a Debian package with nfpm into bin/
	$(MAKE) --no-print-directory units BINDIR=/usr/bin SYSCONFDIR=/etc
	@mkdir -p $(BIN)/completions
	$(BIN)/sanbootctl completion bash >$(BIN)/completions/sanbootctl
	$(BIN)/sanbootctl completion zsh >$(BIN)/completions/_sanbootctl
	$(BIN)/sanbootctl completion fish >$(BIN)/completions/sanbootctl.fish
	DEB_VERSION=$(DEB_VERSION) DEB_ARCH=$(DEB_ARCH) \
		$(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION) package \
		--config packaging/nfpm.yaml --packager deb --target $(BIN)/
