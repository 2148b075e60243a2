# sanboot — build, test, generate. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
TOOLS := $(CURDIR)/.tools/bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
BIN := bin

.PHONY: help build generate check-generate tools test test-unit bench fmt vet deps clean docs check-docs

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

build: ## build the three binaries into bin/
	$(GO) build -o $(BIN)/ ./controlplane/cmd/sanboot-controlplane ./agent/cmd/sanboot-agent ./ctl/cmd/sanbootctl

tools: ## install pinned code generators into .tools/bin
	hack/install-tools.sh

generate: tools ## regenerate api/v1 Go code from the .proto files
	PATH=$(TOOLS):$$PATH protoc --proto_path=api/v1 \
		--go_out=api/v1 --go_opt=paths=source_relative \
		--go-grpc_out=api/v1 --go-grpc_opt=paths=source_relative \
		api/v1/*.proto

check-generate: generate ## fail if the committed generated code is stale
	@git diff --exit-code -- api/v1 || { echo "api/v1 generated code is stale: run 'make generate' and commit"; exit 1; }

fmt:
	gofmt -l -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

test: ## all tests: unit, integration (embedded etcd), end to end
	hack/test.sh

test-unit: ## go test ./... only
	$(GO) test -count=1 ./...

docs: ## sanbootctl man pages (from the --help texts) into docs/man
	rm -rf docs/man
	$(GO) run ./ctl/cmd/sanbootctl-docs docs/man

check-docs: ## fail if docs/man is not what sanbootctl-docs generates
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && $(GO) run ./ctl/cmd/sanbootctl-docs "$$tmp/man" && \
		{ diff -r docs/man "$$tmp/man" || { echo "docs/man is stale: run 'make docs' and commit"; exit 1; }; }

bench: ## benchmarks; figures go to docs/benchmarks.md by hand
	hack/bench.sh

clean:
	rm -rf $(BIN)

# install, uninstall, deb (PREFIX, DESTDIR, ...): see the file.
include packaging/packaging.mk
