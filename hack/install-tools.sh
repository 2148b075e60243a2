#!/usr/bin/env bash
# install-tools.sh: the pinned code generators, into .tools/bin. protoc comes
# from Debian's protobuf-compiler (3.21.12 on bookworm), the well-known types
# it imports (google/protobuf/timestamp.proto, ...) from libprotobuf-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
	echo "install-tools: installing protobuf-compiler (protoc) and libprotobuf-dev"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev
fi
# protoc looks for imports in ../include beside its binary (/usr/include for
# Debian's): say what is missing before protoc says "File not found".
wkt=$(dirname "$(command -v protoc)")/../include/google/protobuf/timestamp.proto
if [ ! -f "$wkt" ]; then
	echo "install-tools: $(realpath -m "$wkt") is missing: the well-known .proto files come with Debian's libprotobuf-dev (apt-get install libprotobuf-dev, or run hack/install-deps.sh)" >&2
	exit 1
fi
export GOBIN=$PWD/.tools/bin
want_go=$(sed -n 's/^PROTOC_GEN_GO_VERSION := //p' Makefile)
want_grpc=$(sed -n 's/^PROTOC_GEN_GO_GRPC_VERSION := //p' Makefile)
[ -x "$GOBIN/protoc-gen-go" ] && "$GOBIN/protoc-gen-go" --version | grep "${want_go}" >/dev/null ||
	go install "google.golang.org/protobuf/cmd/protoc-gen-go@${want_go}"
[ -x "$GOBIN/protoc-gen-go-grpc" ] && "$GOBIN/protoc-gen-go-grpc" --version | grep "${want_grpc#v}" >/dev/null ||
	go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${want_grpc}"
