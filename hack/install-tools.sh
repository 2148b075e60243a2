#!/usr/bin/env bash
# install-tools.sh: the pinned code generators, into .tools/bin. protoc comes
# from Debian's protobuf-compiler (3.21.12 on bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
	echo "install-tools: installing protobuf-compiler (protoc)"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler
fi
export GOBIN=$PWD/.tools/bin
want_go=$(sed -n 's/^PROTOC_GEN_GO_VERSION := //p' Makefile)
want_grpc=$(sed -n 's/^PROTOC_GEN_GO_GRPC_VERSION := //p' Makefile)
[ -x "$GOBIN/protoc-gen-go" ] && "$GOBIN/protoc-gen-go" --version | grep -q "${want_go}" ||
	go install "google.golang.org/protobuf/cmd/protoc-gen-go@${want_go}"
[ -x "$GOBIN/protoc-gen-go-grpc" ] && "$GOBIN/protoc-gen-go-grpc" --version | grep -q "${want_grpc#v}" ||
	go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${want_grpc}"
