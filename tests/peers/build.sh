#!/usr/bin/env bash
# Builds the Go peers listed in tests/peers/peers.list into
# ${AMIKEY_PEERS_DIR:-$HOME/.cache/amikey/peers}/bin, each from its wrapper module's committed
# go.mod and go.sum (GOTOOLCHAIN=local, -mod=readonly: nothing is resolved anew). A peer whose
# inputs (its directory's files, the Go version, its line) are unchanged is skipped.
#   AMIKEY_PEERS_DIR   where bin/ and the stamps live (default: ~/.cache/amikey/peers)
#   AMIKEY_PEERS       build only these binary names (space separated; default: all)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${AMIKEY_PEERS_DIR:-$HOME/.cache/amikey/peers}"
bin="$root/bin"
stamps="$root/stamps"
command -v go >/dev/null || { echo "peers: \`go\` not found: install Go 1.26 or later" >&2; exit 2; }
mkdir -p "$bin" "$stamps"
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
goversion="$(go env GOVERSION)"

while read -r dir out pkg rest; do
  case "$dir" in '' | '#'*) continue ;; esac
  [ -n "$pkg" ] && [ -z "$rest" ] || { echo "peers: bad line in peers.list: $dir $out $pkg $rest" >&2; exit 2; }
  if [ -n "${AMIKEY_PEERS:-}" ] && [[ " $AMIKEY_PEERS " != *" $out "* ]]; then continue; fi
  src="$here/$dir"
  want="$({ printf '%s\n%s %s %s\n' "$goversion" "$dir" "$out" "$pkg"
           (cd "$src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); } | sha256sum | cut -d' ' -f1)"
  if [ -x "$bin/$out" ] && [ "$(cat "$stamps/$out" 2>/dev/null)" = "$want" ]; then
    echo "peers: $out up to date" >&2; continue
  fi
  echo "peers: building $out from tests/peers/$dir ($goversion) ..." >&2
  start=$SECONDS
  (cd "$src" && go build -o "$bin/.$out.tmp" "$pkg")
  mv -f "$bin/.$out.tmp" "$bin/$out"
  echo "$want" >"$stamps/$out"
  echo "peers: built $bin/$out in $((SECONDS - start)) s" >&2
done <"$here/peers.list"
