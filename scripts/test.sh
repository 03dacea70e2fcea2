#!/usr/bin/env bash
# Installs what the tests need and runs every check and test, as root (the tests use real
# namespaces, mounts, cgroups, a real registry and real CNI plugins). Under CI=true a test
# that needs root fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test

# Every step runs even when an earlier one failed, so one run reports everything; the
# script fails at the end if any step did.
failed=()
step() { printf '\n==> %s\n' "$1"; shift; "$@" || failed+=("$*"); }

contract=../shared/tools/cri-contract
if [[ -d $contract ]]; then
    step "CRI wire contract: 0 differences with runtime.v1 of cri-api v0.36" \
        python3 "$contract/protofacts.py" check "$contract/runtime-v1-v0.36.0.json" proto/
else
    echo "no $contract beside this checkout; the contract check needs ../shared"
fi

step "cargo fmt --check" cargo fmt --all --check
step "cargo clippy --all-targets -D warnings" \
    cargo clippy --workspace --all-targets --locked -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
    step "tests: cargo nextest" cargo nextest run --workspace --locked --no-fail-fast
else
    step "tests: cargo test" cargo test --workspace --locked --no-fail-fast
fi

if ((${#failed[@]})); then
    printf '\nFAILED steps:\n' >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
printf '\nall checks passed\n'
