#!/usr/bin/env bash
# Installs what the tests need and runs every check and test, as root (the tests use real
# namespaces, mounts, cgroups, a real registry and real CNI plugins). Under CI=true a test
# that needs root fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test

step() { printf '\n==> %s\n' "$*"; }

step "CRI wire contract (0 differences with runtime.v1 of cri-api v0.36)"
contract=../shared/tools/cri-contract
if [[ -d $contract ]]; then
    python3 "$contract/protofacts.py" check "$contract/runtime-v1-v0.36.0.json" proto/
else
    echo "no $contract beside this checkout; skipping the contract check"
fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (cargo nextest, or cargo test when nextest is absent)"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
