#!/usr/bin/env bash
# Create (or reuse) the Python venv for the moto emulator harness and install tests/moto/requirements.txt.
# Idempotent: a venv whose installed versions already match the pins is a fast no-op.
#   AMIKEY_MOTO_VENV   venv location (default: <repo>/.venv-moto)
#   PYTHON             interpreter used to create the venv (default: python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${AMIKEY_MOTO_VENV:-$repo/.venv-moto}"
req="$here/requirements.txt"
py="${PYTHON:-python3}"

up_to_date() {
  [ -x "$venv/bin/python" ] || return 1
  [ -f "$venv/.amikey-req" ] && cmp -s "$venv/.amikey-req" "$req" || return 1
  # Cheap re-check of the pins against the installed distributions.
  "$venv/bin/python" - "$req" <<'PY' || return 1
import sys, re
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==(\S+)$", line)
    if not m:
        continue
    try:
        if version(m.group(1)) != m.group(3):
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

if up_to_date; then
  echo "setup.sh: $venv is up to date"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  if ! "$py" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup.sh: '$py -m venv' failed; installing python3-venv" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq python3-venv >/dev/null
      "$py" -m venv "$venv"
    else
      echo "setup.sh: '$py -m venv' failed; install python3-venv (as root: apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi

"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req"
cp "$req" "$venv/.amikey-req"
up_to_date || { echo "setup.sh: installed versions do not match $req" >&2; exit 1; }
echo "setup.sh: $venv ready ($("$venv/bin/python" -c 'import moto; print("moto", moto.__version__)'))"
