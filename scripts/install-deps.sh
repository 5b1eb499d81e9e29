#!/usr/bin/env bash
# Installs everything mailnet needs to build, run and test on Debian 12.
# Idempotent and non-interactive: it installs only what is missing.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config ccache
  libboost1.81-dev libboost-filesystem1.81-dev
  nlohmann-json3-dev doctest-dev libldns-dev libcli11-dev libgmime-3.0-dev
  libssl-dev openssl libnet-ssleay-perl
  python3 swaks bind9-dnsutils
  file mutt tmux
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: everything is installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
