#!/usr/bin/env bash
# Builds the project's Dockerfile without a Docker engine and checks the image's entry points.
#
#   scripts/build-image.sh [--tag NAME] [--rebuild] [--refresh-base] [--no-check] [--save FILE]
#                          [--verbose]
#   scripts/build-image.sh --purge        # remove the whole cache (storage, rootfs, logs)
#
# Debian 12, root. Uses Debian's buildah (build), podman (run the checks) and runc. The base
# image named by the Dockerfile's ARG PYTHON_IMAGE (python:3.11-slim-bookworm) cannot be
# pulled here, so a stand-in is made with debootstrap from the Debian mirror (suite taken from
# the image tag, Debian's python3 + pip) and imported into a private container storage as
# localhost/portico-base/<PYTHON_IMAGE>; the build gets it with --build-arg PYTHON_IMAGE=...
# and --pull-never, so nothing is ever asked of a container registry.
#
# Everything lives in one cache directory, ${PORTICO_CACHE:-~/.cache/portico}/image/:
#   rootfs/<suite>/   debootstrap tree (kept; --refresh-base makes it again)
#   storage/ run/     containers storage (graphroot, runroot) of buildah and podman: the base
#                     image and the built image, nothing else (dangling images are pruned)
#   storage.conf, containers.conf, networks/   the engines' configuration and state, named
#                     through CONTAINERS_STORAGE_CONF and CONTAINERS_CONF
#   logs/             debootstrap.log, build.log, checks.log of the last run
# Outside it only /var/lib/containers/cache and /run/containers/networks, which these versions
# always use; a run that created them removes them again.
#
# Cold (empty cache): about 75-90 s (debootstrap ~45 s, build ~20-35 s, checks ~3 s), plus
# about 20 s to apt-get install the tools once. Warm (image current): about 4 s, checks included.
#
# What this machine needs, and why:
#   * runc, not crun: Debian 12's crun 1.8.1 refuses hybrid cgroup hosts ("cgroups in hybrid
#     mode not supported, drop all controllers from cgroupv2") when the cgroup v2 hierarchy
#     has a controller enabled (here: hugetlb) while v1 is mounted.
#   * --ulimit nofile/nproc within the caller's hard limits: podman asks for nofile=1048576
#     (and lowers its own nproc to 32768) and, without CAP_SYS_RESOURCE, the runtime's
#     setrlimit fails with EPERM.
#   * --network host for the build's RUN steps: no bridge, iptables NAT or ip_forward change
#     on the host; pip and apt reach their registries as the host does.
#   * the host's CA bundle bind-mounted (read-only, RUN steps only, never committed) over the
#     build container's: HTTPS egress here is re-signed by a local CA that the host trusts.
#   * no layer cache (see "No --layers" below): a build key on the image decides instead.
#
# Environment: PORTICO_CACHE, PORTICO_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# PORTICO_DEBIAN_SECURITY_MIRROR (default http://deb.debian.org/debian-security),
# PORTICO_IMAGE_CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt; "none" mounts nothing),
# PORTICO_IMAGE_ISOLATION (oci (default, runc) or chroot).
# Exit status: 0 when the image was built and every check passed, non-zero otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${PORTICO_CACHE:-$HOME/.cache/portico}/image
MIRROR=${PORTICO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${PORTICO_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CA_BUNDLE=${PORTICO_IMAGE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
ISOLATION=${PORTICO_IMAGE_ISOLATION:-oci}
# The stand-in for the python image: Debian's python3 with pip, setuptools and wheel, and the
# certificates and tzdata that the python:*-slim images carry too.
ROOTFS_INCLUDE=python3,python3-pip,python3-venv,python-is-python3,ca-certificates,netbase,tzdata
APT_PACKAGES=(buildah podman runc debootstrap)

TAG="" REFRESH_BASE=0 REBUILD=0 CHECK=1 SAVE="" VERBOSE=0 PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --refresh-base) REFRESH_BASE=1; shift ;;
    --rebuild) REBUILD=1; shift ;;
    --no-check) CHECK=0; shift ;;
    --save) SAVE=$2; shift 2 ;;
    --verbose) VERBOSE=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

T0=$SECONDS
say() { printf 'build-image: [%4ss] %s\n' "$((SECONDS - T0))" "$*"; }
die() { printf 'build-image: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, rootful buildah/podman)"

export CONTAINERS_STORAGE_CONF=$CACHE/storage.conf
mkdir -p "$CACHE/logs" "$CACHE/rootfs"
exec 9>"$CACHE/.lock"
flock -w 1200 9 || die "another build-image.sh held $CACHE/.lock for 20 minutes"

if [ "$PURGE" -eq 1 ]; then
  if [ -f "$CONTAINERS_STORAGE_CONF" ] && command -v buildah >/dev/null; then
    buildah rm --all >/dev/null 2>&1 || true
    buildah rmi --all --force >/dev/null 2>&1 || true
  fi
  if findmnt -rn -o TARGET | grep -q "^$CACHE/"; then
    die "something is still mounted under $CACHE (findmnt); not removing it"
  fi
  rm -rf "$CACHE"
  echo "build-image: removed $CACHE"
  exit 0
fi

# Two paths that buildah/podman 1.28/4.3 always use and no setting moves: c/image's blob-info
# cache (/var/lib/containers/cache) and netavark's run directory (/run/containers/networks).
# Removed again at exit when this run created them.
created_outside=()
for d in /var/lib/containers /run/containers; do
  [ -e "$d" ] || created_outside+=("$d")
done
remove_created_outside() {
  local d
  for d in "${created_outside[@]}"; do rm -rf "$d"; done
}
trap remove_created_outside EXIT

cat > "$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$CACHE/run"
EOF
# The engines' own state (events, exit files, network locks) in the cache too, not in /run/libpod,
# /etc/cni/net.d or /etc/containers/networks.
export CONTAINERS_CONF=$CACHE/containers.conf
cat > "$CONTAINERS_CONF" <<EOF
[engine]
tmp_dir = "$CACHE/run/libpod"
events_logger = "none"
[network]
network_config_dir = "$CACHE/networks"
EOF

# --- 1. tools -------------------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
say "tools: buildah $(buildah --version | awk '{print $3}'), podman $(podman --version |
  awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), debootstrap $(
  dpkg-query -W -f='${Version}' debootstrap)"

# --- 2. base image --------------------------------------------------------------------------
PYTHON_IMAGE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$ROOT/Dockerfile" | head -n 1)
[ -n "$PYTHON_IMAGE" ] || die "Dockerfile has no 'ARG PYTHON_IMAGE=...' line"
# python:3.11-slim-bookworm -> Python 3.11 on Debian bookworm.
if [[ ! $PYTHON_IMAGE =~ ^(docker\.io/)?(library/)?python:([0-9]+\.[0-9]+)-(slim-)?([a-z]+)$ ]]; then
  die "cannot derive a Debian suite from PYTHON_IMAGE=$PYTHON_IMAGE (want python:X.Y[-slim]-SUITE)"
fi
PY_VERSION=${BASH_REMATCH[3]} SUITE=${BASH_REMATCH[5]}
BASE_IMAGE=localhost/portico-base/${PYTHON_IMAGE#docker.io/}
ROOTFS=$CACHE/rootfs/$SUITE
STAMP_WANT="suite=$SUITE mirror=$MIRROR security=$SECURITY_MIRROR include=$ROOTFS_INCLUDE v=1"

if [ "$REFRESH_BASE" -eq 1 ] || [ "$(head -n 1 "$ROOTFS.stamp" 2>/dev/null)" != "$STAMP_WANT" ]; then
  say "debootstrap $SUITE from $MIRROR into $ROOTFS (log: $CACHE/logs/debootstrap.log)"
  rm -rf "$ROOTFS.tmp" "$ROOTFS.stamp"
  debootstrap --variant=minbase --include="$ROOTFS_INCLUDE" "$SUITE" "$ROOTFS.tmp" "$MIRROR" \
    > "$CACHE/logs/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CACHE/logs/debootstrap.log" >&2; die "debootstrap failed"; }
  r=$ROOTFS.tmp
  # What Debian's own container images (debuerreotype, "slim") set, which python:*-slim and so
  # the Dockerfile's apt-get step rely on: no docs/man/locales, apt caches cleaned after every
  # install, no service starts from maintainer scripts.
  cat > "$r/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  cat > "$r/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' > "$r/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' > "$r/etc/apt/apt.conf.d/docker-autoremove-suggests"
  printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"
  chmod 0755 "$r/usr/sbin/policy-rc.d"
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* \
    "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* \
    "$r"/var/log/bootstrap.log "$r"/etc/apt/sources.list
  # The python image's interpreter is not Debian-managed: `pip install` into the system
  # interpreter is what the Dockerfile does (PEP 668 marker removed; pip installs to /usr/local).
  rm -f "$r"/usr/lib/python3*/EXTERNALLY-MANAGED
  : > "$r/etc/machine-id"
  cat > "$r/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  got=$(chroot "$r" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$got" = "$PY_VERSION" ] || die "Debian $SUITE has Python $got, the Dockerfile wants $PY_VERSION"
  rm -rf "$ROOTFS"
  mv "$r" "$ROOTFS"
  echo "$STAMP_WANT" > "$ROOTFS.stamp"
  date -u +%Y-%m-%dT%H:%M:%SZ >> "$ROOTFS.stamp"
fi

STAMP_ID=$(sha256sum "$ROOTFS.stamp" | cut -c1-16)
have=$(podman image inspect --format '{{index .Labels "org.portico.rootfs"}}' "$BASE_IMAGE" \
  2>/dev/null || true)
if [ "$have" != "$STAMP_ID" ]; then
  say "import $ROOTFS as $BASE_IMAGE"
  tar -C "$ROOTFS" --numeric-owner -cf - . | podman import --quiet \
    --change "ENV LANG=C.UTF-8" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change 'CMD ["python3"]' \
    --change "LABEL org.portico.rootfs=$STAMP_ID" \
    --message "debootstrap $SUITE stand-in for $PYTHON_IMAGE" \
    - "$BASE_IMAGE" >/dev/null
else
  say "base image $BASE_IMAGE is current"
fi

# --- 3. build -------------------------------------------------------------------------------
if [ -z "$TAG" ]; then
  version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$ROOT/pyproject.toml")
  TAG=localhost/portico:$version
fi
# No --layers: buildah 1.28 keeps a cached `RUN --mount=type=bind,from=<stage>` layer when that
# stage was rebuilt (containers/buildah#4522, #6609), so a layer cache would ship the previous
# build's wheels. Instead the image carries a build key (Dockerfile, .dockerignore, every
# COPY source as .dockerignore filters it, the base image's ID, this script's build options);
# a tagged image with the same key is current and is not rebuilt (--rebuild forces it).
BASE_ID=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE")
BUILD_KEY=$(python3 - "$ROOT" "$BASE_ID $ISOLATION $CA_BUNDLE" <<'PY'
import hashlib, os, re, sys
root, extra = sys.argv[1], sys.argv[2]
h = hashlib.sha256(extra.encode())
dockerfile = open(os.path.join(root, "Dockerfile")).read()
sources = ["Dockerfile", ".dockerignore"]
for line in re.sub(r"\\\n", " ", dockerfile).splitlines():
    words = line.split()
    if words and words[0].upper() in ("COPY", "ADD") and not any(w.startswith("--from") for w in words):
        sources += [w for w in words[1:] if not w.startswith("--")][:-1]
def skip(name):  # the .dockerignore patterns that apply inside the copied trees
    return name == "__pycache__" or name.endswith((".pyc", ".egg-info"))
for src in sources:
    top = os.path.join(root, src)
    if os.path.isfile(top):
        files = [top]
    else:
        files = []
        for d, dirs, names in os.walk(top):
            dirs[:] = sorted(x for x in dirs if not skip(x))
            files += [os.path.join(d, n) for n in sorted(names) if not skip(n)]
    for f in files:
        h.update(os.path.relpath(f, root).encode() + b"\0")
        h.update(open(f, "rb").read() + b"\0")
print(h.hexdigest()[:24])
PY
)
have_key=$(podman image inspect --format '{{index .Labels "org.portico.build-key"}}' "$TAG" \
  2>/dev/null || true)
t_build=$SECONDS
if [ "$have_key" = "$BUILD_KEY" ] && [ "$REBUILD" -eq 0 ]; then
  say "image $TAG is current (build key $BUILD_KEY); --rebuild builds it again"
else
  bud=(buildah bud --pull-never --no-cache --network host --build-arg "PYTHON_IMAGE=$BASE_IMAGE"
       --label "org.portico.build-key=$BUILD_KEY" -t "$TAG" -f "$ROOT/Dockerfile")
  case "$ISOLATION" in
    oci) bud+=(--isolation oci --runtime runc) ;;
    chroot) bud+=(--isolation chroot) ;;
    *) die "PORTICO_IMAGE_ISOLATION must be oci or chroot, not $ISOLATION" ;;
  esac
  if [ "$CA_BUNDLE" != none ] && [ -f "$CA_BUNDLE" ]; then
    bud+=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  fi
  say "build $TAG (isolation $ISOLATION, build key $BUILD_KEY, log: $CACHE/logs/build.log)"
  set +e
  "${bud[@]}" "$ROOT" 2>&1 | tee "$CACHE/logs/build.log" | {
    if [ "$VERBOSE" -eq 1 ]; then cat; else
      grep --line-buffered -E '^\[[0-9]+/[0-9]+\] STEP [0-9]+/[0-9]+: (FROM|RUN|COPY)|COMMIT' |
        sed -u 's/^/    /'
    fi
  }
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$CACHE/logs/build.log" >&2
    die "buildah bud exited $rc (whole log: $CACHE/logs/build.log)"
  fi
  # The previous image of this tag and a replaced base image are dangling now.
  podman image prune --force >/dev/null
fi
size=$(podman image inspect --format '{{.Size}}' "$TAG")
say "image $TAG: $((size / 1000000)) MB ($((SECONDS - t_build)) s)"

# --- 4. entry points ------------------------------------------------------------------------
if [ "$CHECK" -eq 1 ]; then
  nproc_hard=$(ulimit -Hu); [ "$nproc_hard" = unlimited ] && nproc_hard=32768
  [ "$nproc_hard" -gt 32768 ] && nproc_hard=32768
  nofile_hard=$(ulimit -Hn); [ "$nofile_hard" = unlimited ] && nofile_hard=1048576
  run=(podman --runtime runc run --rm --network=none
       --ulimit "nofile=1024:$nofile_hard" --ulimit "nproc=$nproc_hard:$nproc_hard")
  : > "$CACHE/logs/checks.log"
  failed=0
  # check NAME EXPECTED-REGEX ARGS...: runs the image (its ENTRYPOINT unless ARGS say
  # --entrypoint), wants exit 0 and EXPECTED in the output; prints the first output line.
  check() {
    local name=$1 want=$2 out rc
    shift 2
    set +e
    out=$("${run[@]}" "$@" 2>&1)
    rc=$?
    set -e
    printf '=== %s (exit %s)\n%s\n' "$name" "$rc" "$out" >> "$CACHE/logs/checks.log"
    if [ "$rc" -eq 0 ] && grep -Eq "$want" <<<"$out"; then
      printf '    ok    %-32s %s\n' "$name" "$(head -n 1 <<<"$out")"
    else
      printf '    FAIL  %-32s exit %s: %s\n' "$name" "$rc" "$(head -n 3 <<<"$out")"
      failed=1
    fi
  }
  say "check entry points (podman run --network=none, log: $CACHE/logs/checks.log)"
  check "IMAGE (CMD --help)" '^usage: portico ' "$TAG"
  check "IMAGE --version" '^portico [0-9]' "$TAG" --version
  check "IMAGE controller --help" '^usage: portico controller' "$TAG" controller --help
  check "IMAGE speaker --help" '^usage: portico speaker' "$TAG" speaker --help
  check "IMAGE ingress --help" '^usage: portico ingress' "$TAG" ingress --help
  check "haproxy -v" '^HAProxy version 2\.6\.' --entrypoint haproxy "$TAG" -v
  # exabgp 5 has a `version` subcommand; `exabgp --version` is a usage error (exit 2).
  check "exabgp version" '^ExaBGP : 5\.' --entrypoint exabgp "$TAG" version
  check "tini --version" '^tini version 0\.19' --entrypoint tini "$TAG" --version
  check "ip -V" 'iproute2-6\.1' --entrypoint ip "$TAG" -V
  # shellcheck disable=SC2016 # expanded by the container's sh
  check "runs as 10001:10001" '^10001:10001$' --entrypoint sh "$TAG" -c 'echo "$(id -u):$(id -g)"'
  check "component modules import" '^imports ok$' --entrypoint python3 "$TAG" -c \
    'import lb.controller_main, speaker.main, speaker.l2, ingress.main, scapy.all, exabgp; print("imports ok")'
  # FRR: bfdd alone of FRR's daemons, and vtysh.
  check "bfdd -v" '^bfdd version 8\.4\.' --entrypoint /usr/lib/frr/bfdd "$TAG" -v
  check "FRR daemons: bfdd only" '^bfdd $' --entrypoint sh "$TAG" -c \
    'ls /usr/lib/frr | tr "\n" " "; command -v vtysh >/dev/null || echo "no vtysh"'
  # bfdd started the speaker's way (speaker.bgp.bfdd) in the speaker's container as the chart
  # makes it with speaker.bfd.enabled=true: UID 0, read-only root, the state directory on a
  # tmpfs, no privilege escalation, capabilities exactly the chart's (SPEAKER_CAPS +
  # BFD_CAPS; tests/chart/test_chart_policy.py keeps these two lists equal to the chart's).
  # Without BFD_CAPS the speaker refuses to start it and names the chart value.
  SPEAKER_CAPS=NET_RAW,NET_ADMIN,SYS_NICE,IPC_LOCK
  BFD_CAPS=NET_BIND_SERVICE,SYS_ADMIN
  speaker_ctr=(--user 0:0 --read-only --tmpfs /var/run/portico-speaker --tmpfs /tmp
               --security-opt no-new-privileges --cap-drop ALL --entrypoint python3)
  # shellcheck disable=SC2016 # Python, not shell
  bfdd_py='from speaker.bgp.bfdd import BfddProcess, BfddUnavailable
b = BfddProcess("/var/run/portico-speaker")
try:
    b.start("bfd\nexit\n")
except BfddUnavailable as e:
    print("refused:", e)
else:
    print("bfdd started, pid", b.proc.pid, "files", sorted(p.name for p in b.rundir.iterdir()))
    b.stop()'
  check "bfdd starts with BFD caps" '^bfdd started, pid [0-9]+ files .*bfdd\.vty' \
    "${speaker_ctr[@]}" --cap-add "$SPEAKER_CAPS,$BFD_CAPS" "$TAG" -c "$bfdd_py"
  check "bfdd refused without them" '^refused: .*--set speaker\.bfd\.enabled=true' \
    "${speaker_ctr[@]}" --cap-add "$SPEAKER_CAPS" "$TAG" -c "$bfdd_py"
  [ "$failed" -eq 0 ] || die "entry-point checks failed (outputs: $CACHE/logs/checks.log)"
fi

if [ -n "$SAVE" ]; then
  say "save $TAG to $SAVE (docker-archive)"
  rm -f "$SAVE"
  podman save --quiet --format docker-archive -o "$SAVE" "$TAG"
fi
verdict=ok; [ "$CHECK" -eq 1 ] || verdict="built (entry points not checked)"
say "image $TAG $verdict ($((size / 1000000)) MB; storage: CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF)"
