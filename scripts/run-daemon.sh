#!/usr/bin/env bash
# Builds crius in release mode and runs criusd in the foreground on its embedded defaults
# (root /var/lib/crius, state /run/crius, socket unix:///run/crius/crius.sock).
# Extra arguments go to criusd, e.g. --log-level debug.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bins
exec target/release/criusd "$@"
