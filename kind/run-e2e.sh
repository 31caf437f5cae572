#!/usr/bin/env bash
# Portico end-to-end run on a real Kubernetes cluster (kind, in Docker):
#   1. creates a kind cluster (kind/cluster.yaml: 1 control plane + 2 workers),
#   2. builds the Portico image from the repository's Dockerfile and loads it into the nodes,
#   3. installs charts/portico with that image,
#   4. creates an IPAddressPool (+ L2Advertisement) from the kind Docker network's IPv4 subnet,
#   5. runs `pytest -m e2e tests/e2e`,
#   6. deletes the cluster on exit (also on failure or Ctrl-C) unless PORTICO_E2E_KEEP=1.
#
# Needs: docker (with a running engine), kind, kubectl, helm, python3 with pytest (the
# repository's .venv is used when present).
#
# Environment (all optional):
#   PORTICO_E2E_CLUSTER   kind cluster name             (default portico-e2e)
#   PORTICO_E2E_IMAGE     image name:tag to build/load  (default portico:e2e)
#   PORTICO_E2E_KEEP=1    keep the cluster afterwards for debugging
#   PORTICO_E2E_SKIP_BUILD=1  reuse an already built $PORTICO_E2E_IMAGE
#   PYTEST_ARGS           extra pytest arguments        (e.g. "-k ingress -x")
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster=${PORTICO_E2E_CLUSTER:-portico-e2e}
image=${PORTICO_E2E_IMAGE:-portico:e2e}
namespace=portico-system
release=portico
keep=${PORTICO_E2E_KEEP:-0}
workdir=$(mktemp -d "${TMPDIR:-/tmp}/portico-e2e.XXXXXX")
kubeconfig="$workdir/kubeconfig"
created_cluster=0

log() { printf '[run-e2e] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
  local rc=$?
  if [ "$created_cluster" -eq 1 ]; then
    if [ "$keep" = "1" ]; then
      log "keeping cluster $cluster (PORTICO_E2E_KEEP=1); kubeconfig: $kubeconfig"
      log "delete it with: kind delete cluster --name $cluster"
    else
      log "deleting cluster $cluster"
      kind delete cluster --name "$cluster" >/dev/null 2>&1 || log "kind delete cluster failed"
    fi
  fi
  if [ "$keep" != "1" ]; then
    rm -rf "$workdir"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Without Docker, kind cannot run at all: that is an environment without the engine, not a
# failure of Portico. Say in one line what is missing and skip (exit 0), so CI systems without
# Docker can call this unconditionally; the same e2e tests run on the lab cluster instead.
missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  printf '[run-e2e] skipped: not installed: %s\n' "${missing[*]}" >&2
  exit 0
fi
if ! docker info >/dev/null 2>&1; then
  printf '[run-e2e] skipped: docker is installed but no Docker engine answers (docker info)\n' >&2
  exit 0
fi

python=python3
if [ -x "$root/.venv/bin/python" ]; then
  python="$root/.venv/bin/python"
fi
"$python" -c 'import pytest' 2>/dev/null || die "$python has no pytest (run scripts/install-deps.sh)"

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  die "a kind cluster named $cluster already exists; delete it or set PORTICO_E2E_CLUSTER"
fi

log "creating kind cluster $cluster"
created_cluster=1
kind create cluster --name "$cluster" --config "$root/kind/cluster.yaml" \
  --kubeconfig "$kubeconfig" --wait 180s
export KUBECONFIG="$kubeconfig"

if [ "${PORTICO_E2E_SKIP_BUILD:-0}" != "1" ]; then
  log "building image $image"
  docker build -t "$image" "$root"
fi
log "loading image $image into the nodes"
kind load docker-image "$image" --name "$cluster"

repository=${image%:*}
tag=${image##*:}
log "installing chart (release $release, namespace $namespace)"
helm install "$release" "$root/charts/portico" \
  --namespace "$namespace" --create-namespace \
  --set image.repository="$repository" \
  --set image.tag="$tag" \
  --set image.pullPolicy=Never \
  --set logLevel=debug \
  --wait --timeout 5m

# Two disjoint ranges at the top of the kind network's IPv4 subnet, far from the node
# addresses Docker hands out from the bottom: one for layer 2, one for the BGP test.
subnet=$(docker network inspect kind \
  -f '{{range .IPAM.Config}}{{println .Subnet}}{{end}}' | grep -v ':' | head -n 1)
[ -n "$subnet" ] || die "the kind Docker network has no IPv4 subnet"
read -r l2_range bgp_range < <("$python" - "$subnet" <<'PY'
import ipaddress
import sys

net = ipaddress.ip_network(sys.argv[1], strict=False)
if net.num_addresses < 128:
    sys.exit(f"kind subnet {net} is too small for two 20-address pools")
top = int(net.broadcast_address)
# 5 spare addresses below the broadcast address, then 20 for L2 and 20 for BGP.
l2_last, bgp_last = top - 5, top - 30
def rng(last):
    return f"{ipaddress.ip_address(last - 19)}-{ipaddress.ip_address(last)}"
print(rng(l2_last), rng(bgp_last))
PY
)
log "kind subnet $subnet: layer-2 pool $l2_range, BGP pool $bgp_range"

kubectl apply -f - <<YAML
apiVersion: lb.portico.dev/v1alpha1
kind: IPAddressPool
metadata:
  name: e2e
spec:
  addresses:
    - ${l2_range}
---
apiVersion: lb.portico.dev/v1alpha1
kind: L2Advertisement
metadata:
  name: e2e
spec:
  ipAddressPools:
    - e2e
  # Only workers announce: the failover test stops the owner node's container, and the
  # control plane must survive that.
  nodeSelectors:
    - matchExpressions:
        - key: node-role.kubernetes.io/control-plane
          operator: DoesNotExist
YAML

export PORTICO_E2E_KUBECONFIG="$kubeconfig"
export PORTICO_E2E_CLUSTER="$cluster"
export PORTICO_E2E_IMAGE="$image"
export PORTICO_E2E_NAMESPACE="$namespace"
export PORTICO_E2E_RELEASE="$release"
export PORTICO_E2E_L2_POOL=e2e
export PORTICO_E2E_L2_RANGE="$l2_range"
export PORTICO_E2E_BGP_RANGE="$bgp_range"

log "running the e2e suite"
cd "$root"
# PYTEST_ARGS is split on purpose: it carries several arguments.
# shellcheck disable=SC2086
"$python" -m pytest -m e2e -v -ra -p no:cacheprovider tests/e2e ${PYTEST_ARGS:-}
