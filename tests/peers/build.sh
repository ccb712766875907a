#!/usr/bin/env bash
# Builds the Go peers listed in tests/peers/peers.list into
# ${AMIKEY_PEERS_DIR:-$HOME/.cache/amikey/peers}/bin, each from its wrapper module's committed
# go.mod and go.sum (GOTOOLCHAIN=local, -mod=readonly: nothing is resolved anew, a go.sum
# mismatch is an error). A peer whose inputs (every file of its directory, the Go version and
# the package line) are unchanged since its last build is skipped; Go's module and build caches
# make a rebuild after a change fast too.
#   AMIKEY_PEERS_DIR   where bin/ and the stamps live (default: ~/.cache/amikey/peers)
#   AMIKEY_PEERS       build only these binary names (space separated; default: all)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${AMIKEY_PEERS_DIR:-$HOME/.cache/amikey/peers}"
bin="$root/bin"
stamps="$root/stamps"

if ! command -v go >/dev/null; then
  echo "peers: \`go\` not found: install Go 1.25.11 or later (https://go.dev/doc/install);" \
    "the Go peers (Packer 1.9.4, packer-plugin-amazon, the SDK host) are built from source" >&2
  exit 2
fi
mkdir -p "$bin" "$stamps"
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
goversion="$(go env GOVERSION)"

# The hash of everything that decides a peer's binary.
stamp_of() {
  local dir="$1" line="$2"
  {
    printf '%s\n%s\n' "$goversion" "$line"
    (cd "$dir" && find . -type f ! -name '*~' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -d' ' -f1
}

while read -r dir out pkg rest; do
  case "$dir" in '' | '#'*) continue ;; esac
  if [ -z "$pkg" ] || [ -n "$rest" ]; then
    echo "peers: bad line in peers.list (want: <dir> <binary> <package>): $dir $out $pkg $rest" >&2
    exit 2
  fi
  if [ -n "${AMIKEY_PEERS:-}" ] && [[ " $AMIKEY_PEERS " != *" $out "* ]]; then
    continue
  fi
  src="$here/$dir"
  [ -f "$src/go.mod" ] || { echo "peers: $src/go.mod missing" >&2; exit 2; }
  want="$(stamp_of "$src" "$dir $out $pkg")"
  if [ -x "$bin/$out" ] && [ "$(cat "$stamps/$out" 2>/dev/null)" = "$want" ]; then
    echo "peers: $out up to date" >&2
    continue
  fi
  echo "peers: building $out from tests/peers/$dir ($goversion) ..." >&2
  start=$SECONDS
  rm -f "$stamps/$out"
  (cd "$src" && go build -o "$bin/.$out.tmp" "$pkg")
  mv -f "$bin/.$out.tmp" "$bin/$out"
  echo "$want" >"$stamps/$out"
  echo "peers: built $bin/$out in $((SECONDS - start)) s" >&2
done <"$here/peers.list"
