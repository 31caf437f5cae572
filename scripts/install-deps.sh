#!/usr/bin/env bash
# Installs everything Portico's tests, benchmarks and demo need on a fresh Debian 12 (root):
# Debian packages (HAProxy, FRR as the lab's BGP router, nginx as the peer that
# bench/ingress.py measures against, wrk, iproute2, nftables ...) and a virtualenv in .venv
# with the project and its dev extras. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(haproxy frr nginx wrk iproute2 nftables iputils-ping curl openssl procps shellcheck)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to apt-get install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian frr package starts its own daemons under systemd where there is one; the lab
# runs its own bgpd inside namespaces and never uses the system service. Likewise nginx: the
# benchmark starts its own nginx processes with their own config; the system service (port 80)
# is never needed.

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.portico-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
