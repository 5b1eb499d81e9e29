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
  file mutt tmux libcap2-bin
  dovecot-imapd dovecot-pop3d
  libopendkim-dev libspf2-dev libopendmarc-dev python3-dkim opendkim-tools python3-dnspython
  chromium chromium-driver python3-selenium
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# Node.js and npm install the dashboard's pinned JavaScript library; a
# machine that has npm already (from NodeSource, say) keeps its own.
# (NodeSource's nodejs package carries npm; Debian's has it apart.)
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: every Debian package is installed"
else
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v npm >/dev/null 2>&1; then
  [ ${#missing[@]} -eq 0 ] && $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends npm
fi

# The dashboard's graph library, exactly the version package-lock.json pins
# (served by mailnet itself from launcher/web/node_modules; nothing is fetched
# by the browser).
web="$(cd "$(dirname "$0")/.." && pwd)/launcher/web"
pinned="$(node -p "require('$web/package.json').dependencies.cytoscape")"
installed="$(node -p "require('$web/node_modules/cytoscape/package.json').version" 2>/dev/null || true)"
if [ "$pinned" != "$installed" ] || [ ! -f "$web/node_modules/cytoscape/dist/cytoscape.min.js" ]; then
  echo "install-deps: npm ci in launcher/web"
  npm ci --prefix "$web" --no-audit --no-fund --ignore-scripts --loglevel=error
else
  echo "install-deps: the dashboard's libraries are installed"
fi
