"""Builds the real Kubernetes binaries, etcd and Helm from their Go modules, and finds them.

Why a wrapper module: ``k8s.io/kubernetes`` requires its ~33 staging modules (``k8s.io/api``,
``k8s.io/apiserver``, ...) at ``v0.0.0`` with ``replace ... => ./staging/...`` lines, so
``go install k8s.io/kubernetes/cmd/kube-apiserver@v1.X.Y`` is refused. A throw-away module that
requires ``k8s.io/kubernetes`` and replaces every staging module with its published
``v0.X.Y`` resolves. The replace list is generated from the release's own go.mod (the
``=> ./staging/`` lines), never maintained by hand. etcd's server module has relative
replaces too, so it gets the same treatment; Helm builds from a plain wrapper.

The Gateway API conformance suite (``sigs.k8s.io/gateway-api/conformance``, a module of its
own whose go.mod replaces ``sigs.k8s.io/gateway-api => ../``) is built the same way: its test
binary (``go test -c``, TestConformance and the suite's flags), the echo server its base
manifests run (``echo-basic``), and beside them the release's Standard-channel CRDs copied
from the ``sigs.k8s.io/gateway-api`` module (``crds/standard/``) and the suite's base
manifests (``base/manifests.yaml``).

MetalLB (``go.universe.tf/metallb``, no relative replaces) builds from a plain wrapper: its
controller and speaker, with its CRDs and release manifest copied beside them.

Binaries are cached outside the checkout, keyed by product and version
(``$PORTICO_CACHE`` or ``~/.cache/portico``; ``bin/<product>-<version>/``); a build is
skipped when the stamp file of that key exists. Standard library only: this runs before
anything else is installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# One pinned release of each. Kubernetes 1.37.2 declares go 1.26.0 (this machine's Go);
# etcd 3.6 is the release line the issue asks for (kube-apiserver 1.37 talks to it with its
# 3.7 client, the same wire protocol); Helm v4.3.2 is the newest the env package list accepts.
KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v4.3.2"
# Gateway API: v1.6.3 declares go 1.26.0 (v1.7.0 needs a newer Go than this machine's).
GATEWAY_API_VERSION = "v1.6.3"
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
GATEWAY_CONFORMANCE_MODULE = "sigs.k8s.io/gateway-api/conformance"
# MetalLB, the peer the failover benchmark and `portico migrate metallb` are measured against.
# v0.15.2 declares go 1.24.0 and builds with this machine's Go 1.26 (170 s cold, 0.86 GB).
# v0.16.2 (go 1.26.0) does not build here: its github.com/metallb/frr-k8s v0.0.27 is refused
# by the module proxy (403). v0.15.2's BGPPeer CRD declares myASN/peerASN `format: int32`
# with a maximum of 4294967295, which kube-apiserver 1.37 turns into a 422 for every BGPPeer
# that sets them; lab.metallb fixes that format when it installs the CRDs (v0.16 has int64).
METALLB_VERSION = "v0.15.2"
METALLB_MODULE = "go.universe.tf/metallb"

# kubectl too: the demo and the e2e suite show what a user would type, at the server's version
# (the machine's own kubectl, if any, is whatever version it is).
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy",
                 "kubectl")


class BuildError(Exception):
    """A binary could not be built; the message carries the failing command and its output."""


@dataclass(frozen=True)
class Product:
    name: str  # cache key prefix: kubernetes, etcd, helm
    module: str
    version: str
    packages: tuple[tuple[str, str], ...]  # (binary name, Go package path)
    ldflags: tuple[str, ...] = field(default=())
    staging_replaces: bool = False  # generate replaces from the module's relative replaces
    # Test binaries (``go test -c``): (binary name, Go package path).
    test_packages: tuple[tuple[str, str], ...] = field(default=())
    # Files copied from a module's source: (module, directory in it, glob, target directory
    # in the product's cache directory). The module is taken at the product's version.
    copies: tuple[tuple[str, str, str, str], ...] = field(default=())

    def binaries(self) -> tuple[tuple[str, str], ...]:
        return self.packages + self.test_packages


def cache_root() -> Path:
    return Path(os.environ.get("PORTICO_CACHE") or Path.home() / ".cache" / "portico")


def _minor(version: str) -> tuple[str, str]:
    major, minor = version.lstrip("v").split(".")[:2]
    return major, minor


def _kube_ldflags(version: str, date: str) -> tuple[str, ...]:
    major, minor = _minor(version)
    flags = []
    # Both packages carry the version: component-base for --version and /version (what
    # Helm reads as .Capabilities.KubeVersion), client-go for the user agent.
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={date}",
        ]
    return tuple(flags)


def products() -> list[Product]:
    # No commit ids: the module proxy's answers carry none (no VCS origin), and the version
    # is what --version, /version and Helm read.
    date = "1970-01-01T00:00:00Z"  # reproducible: the cache key is the version, not the day
    kube_major, kube_minor = _minor(KUBERNETES_VERSION)
    return [
        Product(
            "etcd",
            "go.etcd.io/etcd/server/v3",
            ETCD_VERSION,
            (("etcd", "go.etcd.io/etcd/server/v3"),),
            (),
            staging_replaces=True,
        ),
        Product(
            "helm",
            "helm.sh/helm/v4",
            HELM_VERSION,
            (("helm", "helm.sh/helm/v4/cmd/helm"),),
            (
                f"-X helm.sh/helm/v4/internal/version.version={HELM_VERSION}",
                "-X helm.sh/helm/v4/internal/version.gitTreeState=clean",
                # The Kubernetes version `helm template` assumes without a cluster.
                f"-X helm.sh/helm/v4/pkg/chart/common.k8sVersionMajor={kube_major}",
                f"-X helm.sh/helm/v4/pkg/chart/common.k8sVersionMinor={kube_minor}",
            ),
        ),
        Product(
            "kubernetes",
            "k8s.io/kubernetes",
            KUBERNETES_VERSION,
            tuple((c, f"k8s.io/kubernetes/cmd/{c}") for c in KUBE_COMMANDS),
            _kube_ldflags(KUBERNETES_VERSION, date),
            staging_replaces=True,
        ),
        Product(
            "gateway-api",
            GATEWAY_CONFORMANCE_MODULE,
            GATEWAY_API_VERSION,
            (("echo-basic", f"{GATEWAY_CONFORMANCE_MODULE}/echo-basic"),),
            (),
            staging_replaces=True,
            test_packages=(("gateway-conformance.test", GATEWAY_CONFORMANCE_MODULE),),
            copies=((GATEWAY_API_MODULE, "config/crd/standard", "*.yaml", "crds/standard"),
                    # The suite's base manifests (also embedded in the test binary): the lab
                    # runner applies them alone to check the backends before the suite runs.
                    (GATEWAY_CONFORMANCE_MODULE, "base", "manifests.yaml", "base")),
        ),
        Product(
            "metallb",
            METALLB_MODULE,
            METALLB_VERSION,
            # Binary names carry the product: `binary("controller")` would be ambiguous.
            (("metallb-controller", f"{METALLB_MODULE}/controller"),
             ("metallb-speaker", f"{METALLB_MODULE}/speaker")),
            (f"-X {METALLB_MODULE}/internal/version.gitCommit=module-proxy",
             f"-X {METALLB_MODULE}/internal/version.gitBranch={METALLB_VERSION}"),
            copies=((METALLB_MODULE, "config/crd/bases", "*.yaml", "crds"),
                    # The release's own L2/memberlist manifests, as a user applies them.
                    (METALLB_MODULE, "config/manifests", "metallb-native.yaml", "manifests")),
        ),
    ]


def product_dir(p: Product) -> Path:
    return cache_root() / "bin" / f"{p.name}-{p.version}"


def product(name: str) -> Product:
    for p in products():
        if p.name == name:
            return p
    raise BuildError(f"unknown product {name!r}")


def gateway_api_crds() -> list[Path]:
    """The cached Standard-channel Gateway API CRD files; BuildError if not built."""
    p = product("gateway-api")
    if not (product_dir(p) / ".complete").exists():
        raise BuildError(f"gateway-api {p.version} is not built: run `make binaries`")
    return sorted((product_dir(p) / "crds" / "standard").glob("*.yaml"))


def metallb_crds() -> list[Path]:
    """The cached MetalLB CRD files (metallb.io); BuildError if not built."""
    p = product("metallb")
    if not (product_dir(p) / ".complete").exists():
        raise BuildError(f"metallb {p.version} is not built: run `make binaries`")
    return sorted((product_dir(p) / "crds").glob("*.yaml"))


def metallb_manifest() -> Path:
    """The cached ``metallb-native.yaml`` of the pinned release; BuildError if not built."""
    p = product("metallb")
    path = product_dir(p) / "manifests" / "metallb-native.yaml"
    if not (product_dir(p) / ".complete").exists() or not path.exists():
        raise BuildError(f"metallb {p.version} is not built: run `make binaries`")
    return path


def binary(name: str) -> Path:
    """Path of a built binary (kube-apiserver, etcd, helm, ...); BuildError if not built."""
    for p in products():
        for bin_name, _ in p.binaries():
            if bin_name == name:
                path = product_dir(p) / bin_name
                if not (product_dir(p) / ".complete").exists() or not path.exists():
                    raise BuildError(f"{name} {p.version} is not built: run `make binaries`")
                return path
    raise BuildError(f"unknown binary {name!r}")


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = "-mod=mod"
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def _run(cmd: list[str], cwd: Path, log: Path) -> str:
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(
            cmd, cwd=cwd, env=_go_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, check=False,
        )
        fh.write(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise BuildError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def module_info(module: str, version: str, work: Path, log: Path) -> dict[str, object]:
    out = _run(["go", "mod", "download", "-json", f"{module}@{version}"], work, log)
    info: dict[str, object] = json.loads(out)
    return info


_REL_REPLACE = re.compile(r"^\s*(?:replace\s+)?(\S+)\s+=>\s+(\.\.?/\S*)\s*$")


def relative_replaces(gomod_text: str) -> list[str]:
    """Module paths that a go.mod replaces with a relative directory (staging modules)."""
    found = []
    for line in gomod_text.splitlines():
        m = _REL_REPLACE.match(line)
        if m and "FORBIDDEN" not in m.group(2):
            found.append(m.group(1))
    return found


def published_version(module: str, product: Product) -> str:
    """The published tag of a staging module for the product's release.

    Kubernetes staging modules are tagged v0.<minor>.<patch> for release v1.<minor>.<patch>;
    etcd's sibling modules carry the release's own version.
    """
    if product.name == "kubernetes":
        _, minor, patch = product.version.lstrip("v").split(".")
        return f"v0.{minor}.{patch}"
    return product.version


def wrapper_gomod(product: Product, gomod_text: str) -> str:
    lines = [
        "// Generated by lab/controlplane/binaries.py; throw-away build wrapper.",
        f"module portico.local/build/{product.name}",
        "",
        "go 1.26.0",
        "",
        f"require {product.module} {product.version}",
        "",
    ]
    if product.staging_replaces:
        for mod in relative_replaces(gomod_text):
            lines.append(f"replace {mod} => {mod} {published_version(mod, product)}")
    return "\n".join(lines) + "\n"


class TreeMemory:
    """Peak summed RSS of this process's descendants (the go command, its compilers and
    linker run in parallel: one process's maximum understates what the build needs)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(self.interval):
            parents: dict[int, int] = {}
            rss: dict[int, int] = {}
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    status = (entry / "status").read_text()
                except OSError:
                    continue
                pid = int(entry.name)
                parents[pid] = int(fields[1])
                m = re.search(r"^VmRSS:\s+(\d+)", status, re.M)
                rss[pid] = int(m.group(1)) if m else 0
            total = 0
            for pid in rss:
                p = parents.get(pid, 0)
                while p and p != me:
                    p = parents.get(p, 0)
                if p == me:
                    total += rss[pid]
            self.peak_kib = max(self.peak_kib, total)


def _progress(msg: str) -> None:
    print(f"binaries: {msg}", flush=True)


def build(product: Product, force: bool = False) -> Path:
    out = product_dir(product)
    stamp = out / ".complete"
    # A binary added to a product since its cached build is built alone (the others stay).
    missing = [(b, pkg) for b, pkg in product.binaries() if not (out / b).exists()]
    if stamp.exists() and not missing and not force:
        if any(not (out / target).is_dir() for *_, target in product.copies):
            # Files added to a product since its cached build: copied alone.
            work = cache_root() / "build" / f"{product.name}-{product.version}"
            work.mkdir(parents=True, exist_ok=True)
            (work / "go.mod").write_text(f"module portico.local/build/{product.name}\n\n"
                                         "go 1.26.0\n")
            _copy_in(product, work, out, work / "build.log")
        _progress(f"{product.name} {product.version}: cached in {out}")
        return out
    todo = product.binaries() if force or not stamp.exists() else tuple(missing)
    work = cache_root() / "build" / f"{product.name}-{product.version}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    t0 = time.monotonic()
    with TreeMemory() as mem:
        _build_in(product, work, out, log, todo)
    record = {
        "product": product.name,
        "version": product.version,
        "seconds": round(time.monotonic() - t0, 1),
        "peak_rss_mib_build_tree": round(mem.peak_kib / 1024, 1),
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "go": subprocess.run(["go", "version"], capture_output=True, text=True,
                             check=False).stdout.strip(),
        "binaries": [b for b, _ in todo],
    }
    # The full (cold) build's record stays in build.json; a later top-up has its own file.
    name = "build.json" if todo == product.binaries() else f"build-{todo[0][0]}.json"
    (out / name).write_text(json.dumps(record, indent=2) + "\n")
    stamp.write_text(product.version + "\n")
    _progress(f"{product.name} {product.version}: done in {record['seconds']} s "
              f"(peak RSS of the build's processes together: "
              f"{record['peak_rss_mib_build_tree']} MiB)")
    return out


def _build_in(product: Product, work: Path, out: Path, log: Path,
              packages: tuple[tuple[str, str], ...]) -> None:
    _progress(f"{product.name} {product.version}: resolving {product.module} (log: {log})")
    (work / "go.mod").write_text(f"module portico.local/build/{product.name}\n\ngo 1.26.0\n")
    info = module_info(product.module, product.version, work, log)
    gomod = Path(str(info["GoMod"])).read_text()
    (work / "go.mod").write_text(wrapper_gomod(product, gomod))
    # No go.sum is kept: `go build -mod=mod` records the checksums (verified against the
    # checksum database) of exactly the modules the packages built need.
    tests = dict(product.test_packages)
    for bin_name, pkg in packages:
        verb = ["test", "-c"] if bin_name in tests else ["build"]
        _progress(f"{product.name} {product.version}: go {' '.join(verb)} {pkg}")
        t1 = time.monotonic()
        _run(
            ["go", *verb, "-trimpath", "-ldflags", " ".join(("-s", "-w", *product.ldflags)),
             "-o", str(out / bin_name), pkg],
            work, log,
        )
        _progress(f"{product.name}: {bin_name} built in {time.monotonic() - t1:.0f} s")
    _copy_in(product, work, out, log)


def _copy_in(product: Product, work: Path, out: Path, log: Path) -> None:
    for module, subdir, pattern, target in product.copies:
        src = Path(str(module_info(module, product.version, work, log)["Dir"])) / subdir
        files = copy_files(src, pattern, out / target)
        _progress(f"{product.name}: {len(files)} files of {module}/{subdir} -> {out / target}")


def copy_files(src: Path, pattern: str, dest: Path) -> list[Path]:
    """Copy ``src/pattern`` into a fresh ``dest`` (the module cache's files are read-only;
    the copies are made writable so that a rebuild can replace them)."""
    if not src.is_dir():
        raise BuildError(f"{src} is not a directory of the module")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    copied = []
    for path in sorted(src.glob(pattern)):
        target = dest / path.name
        target.write_bytes(path.read_bytes())
        copied.append(target)
    if not copied:
        raise BuildError(f"no {pattern} in {src}")
    return copied


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.controlplane.binaries",
                                 description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--force", action="store_true", help="rebuild even when cached")
    ap.add_argument("--only", action="append", default=[],
                    help="product to build (etcd, helm, kubernetes, gateway-api, metallb); "
                         "default: all")
    ap.add_argument("--print-path", metavar="BINARY", help="print a built binary's path")
    args = ap.parse_args(argv)
    if args.print_path:
        print(binary(args.print_path))
        return 0
    if shutil.which("go") is None:
        print("binaries: the Go toolchain is not on PATH", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        for p in products():
            if not args.only or p.name in args.only:
                build(p, force=args.force)
    except BuildError as exc:
        print(f"binaries: {exc}", file=sys.stderr)
        return 1
    _progress(f"all binaries ready in {time.monotonic() - t0:.0f} s ({cache_root() / 'bin'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
