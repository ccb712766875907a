# Sourced by scripts/*: a cargo target directory that survives fresh clones on the same machine
# (CI clones anew each run; the AWS SDK takes minutes to build cold), unless the caller set one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${AMIKEY_TARGET_DIR:-$HOME/.cache/amikey/target}}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export AMIKEY_MOTO_PYTHON="${AMIKEY_MOTO_PYTHON:-$PWD/.venv-moto/bin/python}"
# The Go peers built by tests/peers/build.sh (packer-1.9.4, packer-plugin-amazon_v1.8.2, aws-lambda-rie, ...).
export PATH="${AMIKEY_PEERS_DIR:-$HOME/.cache/amikey/peers}/bin:$PATH"
