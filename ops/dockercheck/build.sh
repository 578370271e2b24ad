#!/usr/bin/env bash
# Builds, with this machine's Go, the two programs that check Docker's files without Docker:
#   bin/docker-compose  the real Compose (docker/compose v5): `config` loads compose.yaml exactly as
#                       `docker compose config` does (interpolation, profiles, the spec's schema)
#   bin/dockerfile      BuildKit's frontend on the Dockerfile (see dockerfile/main.go)
# Versions are pinned by go.mod and go.sum; modules come from the Go module proxy. Quick when
# nothing changed (the tests run this on first use; `make test` too).
set -euo pipefail
source "$(dirname "$0")/../common.sh"
HERE="$ROOT/ops/dockercheck"
BIN="$HERE/bin"
command -v go >/dev/null \
    || die "Go is needed to check compose.yaml and the Dockerfile: install Go $(sed -n 's/^go //p' "$HERE/go.mod") or newer so that go is on the PATH."

# A program is rebuilt when a Go file, go.mod or go.sum is newer than it.
stale() {
    [ ! -x "$1" ] || [ -n "$(find "$HERE" -path "$BIN" -prune -o \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -newer "$1" -print -quit)" ]
}

cd "$HERE"
export GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
if stale "$BIN/docker-compose"; then
    compose=$(go list -m -f '{{.Version}}' github.com/docker/compose/v5)
    say "building docker compose $compose from the Go module proxy (about two minutes the first time)"
    go build -ldflags "-X github.com/docker/compose/v5/internal.Version=$compose" \
        -o "$BIN/docker-compose" github.com/docker/compose/v5/cmd
fi
if stale "$BIN/dockerfile"; then
    say "building the Dockerfile check (BuildKit's frontend)"
    go build -o "$BIN/dockerfile" ./dockerfile
fi
