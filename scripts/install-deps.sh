#!/usr/bin/env bash
# Installs, from Debian's archive only, what building, running and testing crius needs.
# Rust itself comes from the machine's toolchain (rustup); nothing is downloaded by hand.
#   scripts/install-deps.sh          build + run dependencies
#   scripts/install-deps.sh --test   also the test fixtures: registry, CNI plugins, runc, crun,
#                                    systemd, dbus-daemon
set -euo pipefail

packages=(protobuf-compiler gcc pkg-config zlib1g-dev iproute2 iptables ca-certificates)
if [[ "${1:-}" == "--test" ]]; then
    packages+=(
        busybox-static              # rootfs and image fixtures (static: runs in any rootfs)
        docker-registry             # the real local registry tests pull from (127.0.0.1 only)
        apache2-utils               # htpasswd for the basic-auth registry tests
        runc crun                   # runc-compatible handlers for the conformance suite
        containernetworking-plugins # real CNI plugins for networking tests
        systemd                     # a systemd --user manager for the systemd cgroup driver tests
        dbus-daemon                 # a private message bus for the D-Bus client's bus transport
    )
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: need root to apt-get install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The registry package ships a system service; tests start their own instances.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
command -v cargo >/dev/null || { echo "install-deps: cargo not found; install Rust with rustup first" >&2; exit 1; }
