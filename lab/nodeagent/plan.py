"""Pod spec -> what to run, or why it cannot run (pure: data in, data out).

``references`` says which Secrets, ConfigMaps and ServiceAccount tokens a pod needs; the I/O
shell fetches them into ``Sources``. ``volume_contents`` turns the pod's volumes into files
to write; ``plan_container`` turns one container into a ``LaunchPlan`` (argv, environment,
user and groups, capabilities, mounts) or a ``Failure`` whose reason and message go into the
container's waiting state, as the kubelet's do.

The rules are the kubelet's (``pkg/kubelet/kubelet_pods.go`` makeEnvironmentVariables,
``pkg/fieldpath``, ``third_party/forked/golang/expansion``), including their quirks: ``$(VAR)``
of an unknown variable stays as written, ``$$`` is a literal ``$``; an ``envFrom`` key that is
not a valid variable name is skipped; a missing non-optional Secret or key stops the container
with ``CreateContainerConfigError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lab.nodeagent import caps as capabilities
from lab.nodeagent import images
from lab.nodeagent.images import Image, NotMapped, Toolbox

Obj = dict[str, Any]

CONFIG_ERROR = "CreateContainerConfigError"
# The kubelet keeps a container "ContainerCreating" while a volume cannot be set up (and says
# why in a FailedMount event); the agent says why in the waiting message too.
CREATING = "ContainerCreating"
DEFAULT_MODE = 0o644  # the API's default for configMap/secret/projected/downwardAPI volumes
TOKEN_SECONDS = 3600  # the API's default expirationSeconds of a serviceAccountToken source
# Mount points the launcher may create: it mounts a fresh tmpfs on /run for every container
# (an image's /run is empty too); anywhere else the mount point must already exist here.
CREATABLE_ROOTS = ("/run/", "/var/run/")
UNSUPPORTED_VOLUME = ("hostPath", "persistentVolumeClaim", "ephemeral", "csi", "image",
                      "nfs", "iscsi", "rbd", "cephfs", "fc", "flexVolume", "gitRepo")


@dataclass(frozen=True)
class Failure:
    reason: str  # CamelCase, the container's waiting reason
    message: str


@dataclass(frozen=True)
class TokenSpec:
    volume: str
    path: str
    audience: str  # "" = the API server's own audiences
    seconds: int


@dataclass(frozen=True)
class References:
    secrets: frozenset[str]
    configmaps: frozenset[str]
    tokens: tuple[TokenSpec, ...]


@dataclass(frozen=True)
class Sources:
    """What the shell fetched for one pod (missing objects are simply absent)."""

    secrets: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)
    configmaps: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)
    tokens: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (volume, path)
    token_errors: Mapping[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodContext:
    node_name: str
    pod_ips: tuple[str, ...]
    host_ips: tuple[str, ...]
    api_host: str  # KUBERNETES_SERVICE_HOST
    api_port: int
    box: Toolbox
    netns: str | None = None  # the pod's network namespace; None: hostNetwork
    volume_dirs: Mapping[str, str] = field(default_factory=dict)  # volume name -> directory
    allocatable: Mapping[str, str] = field(default_factory=dict)  # node cpu/memory


@dataclass(frozen=True)
class VolumeFile:
    path: str  # relative to the volume's directory
    data: bytes
    mode: int


@dataclass(frozen=True)
class Volume:
    name: str
    empty_dir: bool  # else: the files below, rewritten whenever they change
    files: tuple[VolumeFile, ...] = ()
    fs_group: int | None = None


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    readonly: bool


@dataclass(frozen=True)
class LaunchPlan:
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    caps: frozenset[str] | None  # bounding set; None = privileged (left as the agent's)
    no_new_privs: bool
    mounts: tuple[Mount, ...]
    netns: str | None
    hostname: str | None
    image: Image

    def launcher_spec(self) -> Obj:
        """The JSON the launcher reads (``lab.nodeagent.launch``)."""
        return {
            "argv": list(self.argv), "env": [list(kv) for kv in self.env], "cwd": self.cwd,
            "uid": self.uid, "gid": self.gid, "groups": list(self.groups),
            "caps": None if self.caps is None else sorted(self.caps),
            "no_new_privs": self.no_new_privs,
            "mounts": [{"source": m.source, "target": m.target, "readonly": m.readonly}
                       for m in self.mounts],
            "netns": self.netns, "hostname": self.hostname,
        }


# ---- small helpers -----------------------------------------------------------------------------

def _d(v: Any) -> Obj:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def meta(pod: Obj) -> Obj:
    return _d(pod.get("metadata"))


def spec(pod: Obj) -> Obj:
    return _d(pod.get("spec"))


def pod_ref(pod: Obj) -> str:
    return f"{meta(pod).get('namespace', '')}/{meta(pod).get('name', '')}"


# ---- quantities ------------------------------------------------------------------------------

_QUANTITY = re.compile(r"^\+?([0-9]+)(?:\.([0-9]*))?([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def milli_value(quantity: str) -> int | None:
    """A resource quantity times 1000, rounded up (``1.5Gi``, ``250m``, ``1e3``); None when
    it is not one. Integers only: no float rounding on byte counts."""
    m = _QUANTITY.match(str(quantity).strip())
    if not m:
        return None
    whole, frac, suffix = m.group(1), m.group(2) or "", m.group(3) or ""
    n = int(whole + frac)
    if suffix in _BINARY:
        n <<= _BINARY[suffix]
        exp10 = 0
    elif suffix[:1] in ("e", "E"):
        exp10 = int(suffix[1:])
    else:
        exp10 = _DECIMAL[suffix]
    p = exp10 - len(frac) + 3
    scale: int = 10 ** abs(p)
    return n * scale if p >= 0 else -(-n // scale)


# ---- downward API --------------------------------------------------------------------------

_SUBSCRIPT = re.compile(r"^(metadata\.labels|metadata\.annotations)\['(.*)'\]$")


def _format_map(m: Mapping[str, Any]) -> str:
    # pkg/fieldpath FormatMap: key="value" lines, sorted, values %q-quoted.
    return "\n".join(f'{k}="{_go_quote(str(m[k]))}"' for k in sorted(m))


def _go_quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def field_value(pod: Obj, path: str, ctx: PodContext) -> str | None:
    """A ``fieldRef.fieldPath`` of the pod (None: unsupported path)."""
    md = meta(pod)
    m = _SUBSCRIPT.match(path)
    if m:
        return str(_d(md.get(m.group(1).split(".")[1])).get(m.group(2), ""))
    values: dict[str, Callable[[], str]] = {
        "metadata.name": lambda: str(md.get("name", "")),
        "metadata.namespace": lambda: str(md.get("namespace", "")),
        "metadata.uid": lambda: str(md.get("uid", "")),
        "metadata.labels": lambda: _format_map(_d(md.get("labels"))),
        "metadata.annotations": lambda: _format_map(_d(md.get("annotations"))),
        "spec.nodeName": lambda: str(spec(pod).get("nodeName") or ctx.node_name),
        "spec.serviceAccountName": lambda: str(spec(pod).get("serviceAccountName", "")),
        "status.hostIP": lambda: ctx.host_ips[0] if ctx.host_ips else "",
        "status.hostIPs": lambda: ",".join(ctx.host_ips),
        "status.podIP": lambda: ctx.pod_ips[0] if ctx.pod_ips else "",
        "status.podIPs": lambda: ",".join(ctx.pod_ips),
    }
    fn = values.get(path)
    return fn() if fn else None


def resource_value(pod: Obj, container_name: str, ref: Obj, ctx: PodContext) -> str | None:
    """A ``resourceFieldRef`` (limits.cpu, requests.memory, ...): a limit that is not set is
    the node's allocatable amount, as the kubelet reports it; rounded up by the divisor."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory",
                                                          "ephemeral-storage"):
        return None
    container = next((c for c in _l(spec(pod).get("containers"))
                      if _d(c).get("name") == container_name), None)
    if container is None:
        return None
    amount = _d(_d(container.get("resources")).get(kind)).get(name)
    if amount is None:
        amount = ctx.allocatable.get(name, "0") if kind == "limits" else "0"
    value, divisor = milli_value(str(amount)), milli_value(str(ref.get("divisor") or "1"))
    if value is None or not divisor:
        return None
    return str(-(-value // divisor))


# ---- references and volumes --------------------------------------------------------------

def _projected_sources(vol: Obj) -> list[Obj]:
    return [_d(s) for s in _l(_d(vol.get("projected")).get("sources"))]


def references(pod: Obj) -> References:
    """Every Secret, ConfigMap and token the pod's containers and volumes refer to."""
    secrets: set[str] = set()
    configmaps: set[str] = set()
    tokens: list[TokenSpec] = []
    for c in _l(spec(pod).get("containers")):
        for src in _l(_d(c).get("envFrom")):
            if _d(src).get("secretRef"):
                secrets.add(str(_d(src["secretRef"]).get("name", "")))
            if _d(src).get("configMapRef"):
                configmaps.add(str(_d(src["configMapRef"]).get("name", "")))
        for env in _l(_d(c).get("env")):
            vf = _d(_d(env).get("valueFrom"))
            if vf.get("secretKeyRef"):
                secrets.add(str(_d(vf["secretKeyRef"]).get("name", "")))
            if vf.get("configMapKeyRef"):
                configmaps.add(str(_d(vf["configMapKeyRef"]).get("name", "")))
    for vol in (_d(v) for v in _l(spec(pod).get("volumes"))):
        if vol.get("secret"):
            secrets.add(str(_d(vol["secret"]).get("secretName", "")))
        if vol.get("configMap"):
            configmaps.add(str(_d(vol["configMap"]).get("name", "")))
        for src in _projected_sources(vol):
            if src.get("secret"):
                secrets.add(str(_d(src["secret"]).get("name", "")))
            if src.get("configMap"):
                configmaps.add(str(_d(src["configMap"]).get("name", "")))
            sat = _d(src.get("serviceAccountToken"))
            if sat:
                tokens.append(TokenSpec(str(vol.get("name", "")), str(sat.get("path", "token")),
                                        str(sat.get("audience") or ""),
                                        int(sat.get("expirationSeconds") or TOKEN_SECONDS)))
    secrets.discard("")
    configmaps.discard("")
    return References(frozenset(secrets), frozenset(configmaps), tuple(tokens))


def _items(kind: str, name: str, data: Mapping[str, bytes] | None, src: Obj,
           default_mode: int, vol: str) -> list[VolumeFile] | Failure:
    optional = bool(src.get("optional"))
    if data is None:
        if optional:
            return []
        return Failure(CREATING, f'MountVolume.SetUp failed for volume "{vol}": '
                                 f'{kind} "{name}" not found')
    items = _l(src.get("items"))
    if not items:
        return [VolumeFile(k, v, default_mode) for k, v in sorted(data.items())]
    out: list[VolumeFile] = []
    for item in (_d(i) for i in items):
        key = str(item.get("key", ""))
        if key not in data:
            if optional:
                continue
            return Failure(CREATING, f'MountVolume.SetUp failed for volume "{vol}": '
                                     f"{kind} references non-existent config key: {key}")
        out.append(VolumeFile(str(item.get("path") or key), data[key],
                              int(item.get("mode") or default_mode)))
    return out


def _downward_items(pod: Obj, items: list[Any], default_mode: int, vol: str,
                    ctx: PodContext) -> list[VolumeFile] | Failure:
    out: list[VolumeFile] = []
    for item in (_d(i) for i in items):
        if item.get("fieldRef"):
            value = field_value(pod, str(_d(item["fieldRef"]).get("fieldPath", "")), ctx)
        else:
            ref = _d(item.get("resourceFieldRef"))
            value = resource_value(pod, str(ref.get("containerName", "")), ref, ctx)
        if value is None:
            return Failure(CREATING, f'volume "{vol}": unsupported downward API item {item}')
        out.append(VolumeFile(str(item.get("path", "")), value.encode(),
                              int(item.get("mode") or default_mode)))
    return out


def volume_contents(pod: Obj, sources: Sources, ctx: PodContext) -> tuple[Volume, ...] | Failure:
    """The pod's volumes as directories to create and files to write."""
    fs_group = _d(spec(pod).get("securityContext")).get("fsGroup")
    group = int(fs_group) if isinstance(fs_group, int) else None
    out: list[Volume] = []
    for vol in (_d(v) for v in _l(spec(pod).get("volumes"))):
        name = str(vol.get("name", ""))
        files: list[VolumeFile] | Failure
        if "emptyDir" in vol:
            out.append(Volume(name, True, fs_group=group))
            continue
        if vol.get("configMap"):
            src = _d(vol["configMap"])
            cm = str(src.get("name", ""))
            files = _items("configmap", cm, sources.configmaps.get(cm), src,
                           int(src.get("defaultMode") or DEFAULT_MODE), name)
        elif vol.get("secret"):
            src = _d(vol["secret"])
            sec = str(src.get("secretName", ""))
            files = _items("secret", sec, sources.secrets.get(sec), src,
                           int(src.get("defaultMode") or DEFAULT_MODE), name)
        elif vol.get("downwardAPI"):
            src = _d(vol["downwardAPI"])
            files = _downward_items(pod, _l(src.get("items")),
                                    int(src.get("defaultMode") or DEFAULT_MODE), name, ctx)
        elif vol.get("projected"):
            files = _projected(pod, vol, sources, ctx)
        else:
            kind = next((k for k in vol if k != "name"), "unknown")
            return Failure(CREATING, f'volume "{name}": type {kind} is not supported by the lab '
                                     "node agent (emptyDir, configMap, secret, projected and "
                                     "downwardAPI are)")
        if isinstance(files, Failure):
            return files
        out.append(Volume(name, False, tuple(files), group))
    return tuple(out)


def _projected(pod: Obj, vol: Obj, sources: Sources,
               ctx: PodContext) -> list[VolumeFile] | Failure:
    name = str(vol.get("name", ""))
    mode = int(_d(vol.get("projected")).get("defaultMode") or DEFAULT_MODE)
    files: list[VolumeFile] = []
    for src in _projected_sources(vol):
        part: list[VolumeFile] | Failure
        if src.get("serviceAccountToken"):
            path = str(_d(src["serviceAccountToken"]).get("path", "token"))
            token = sources.tokens.get((name, path))
            if token is None:
                why = sources.token_errors.get((name, path), "not requested yet")
                return Failure(CREATING, f'MountVolume.SetUp failed for volume "{name}": '
                                         f"failed to fetch token: {why}")
            part = [VolumeFile(path, token.encode(), mode)]
        elif src.get("configMap"):
            s = _d(src["configMap"])
            cm = str(s.get("name", ""))
            part = _items("configmap", cm, sources.configmaps.get(cm), s, mode, name)
        elif src.get("secret"):
            s = _d(src["secret"])
            sec = str(s.get("name", ""))
            part = _items("secret", sec, sources.secrets.get(sec), s, mode, name)
        elif src.get("downwardAPI"):
            part = _downward_items(pod, _l(_d(src["downwardAPI"]).get("items")), mode, name,
                                   ctx)
        else:
            kind = next(iter(src), "unknown")
            return Failure(CREATING, f'volume "{name}": projected source {kind} is not '
                                     "supported by the lab node agent")
        if isinstance(part, Failure):
            return part
        files.extend(part)
    return files


# ---- environment --------------------------------------------------------------------------

def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (third_party/forked/golang/expansion): ``$$`` is
    ``$``; an unknown or unterminated reference stays as written."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close == -1:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2:close]
                value = lookup(name)
                out.append(value if value is not None else f"$({name})")
                i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def service_env(ctx: PodContext) -> dict[str, str]:
    """The ``kubernetes`` Service's variables (what in-cluster configuration reads)."""
    h, p = ctx.api_host, ctx.api_port
    return {
        "KUBERNETES_SERVICE_HOST": h, "KUBERNETES_SERVICE_PORT": str(p),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(p), "KUBERNETES_PORT": f"tcp://{h}:{p}",
        f"KUBERNETES_PORT_{p}_TCP": f"tcp://{h}:{p}", f"KUBERNETES_PORT_{p}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{p}_TCP_PORT": str(p), f"KUBERNETES_PORT_{p}_TCP_ADDR": h,
    }


def _valid_env_name(name: str) -> bool:
    # RelaxedEnvironmentVariableValidation (GA): any printable ASCII but '='.
    return bool(name) and "=" not in name and all(" " <= c <= "~" for c in name)


def container_env(pod: Obj, container: Obj, sources: Sources,
                  ctx: PodContext) -> dict[str, str] | Failure:
    """The container's own variables (envFrom, then env) plus the service variables, in the
    kubelet's order of precedence."""
    cname = str(container.get("name", ""))
    env: dict[str, str] = {}
    for src in (_d(s) for s in _l(container.get("envFrom"))):
        prefix = str(src.get("prefix") or "")
        for kind, ref_key, store in (("configmap", "configMapRef", sources.configmaps),
                                     ("secret", "secretRef", sources.secrets)):
            ref = _d(src.get(ref_key))
            if not ref:
                continue
            data = store.get(str(ref.get("name", "")))
            if data is None:
                if ref.get("optional"):
                    continue
                return Failure(CONFIG_ERROR, f'{kind} "{ref.get("name")}" not found')
            for key, raw in data.items():
                if _valid_env_name(prefix + key):
                    env[prefix + key] = raw.decode("utf-8", "replace")
    services = service_env(ctx)

    def lookup(name: str) -> str | None:
        return env.get(name, services.get(name))

    for item in (_d(e) for e in _l(container.get("env"))):
        name = str(item.get("name", ""))
        vf = _d(item.get("valueFrom"))
        if not vf:
            env[name] = expand(str(item.get("value") or ""), lookup)
            continue
        value = _value_from(pod, cname, vf, sources, ctx)
        if isinstance(value, Failure):
            return value
        if value is not None:
            env[name] = value
    for key, value in services.items():
        env.setdefault(key, value)
    return env


def _value_from(pod: Obj, cname: str, vf: Obj, sources: Sources,
                ctx: PodContext) -> str | Failure | None:
    if vf.get("fieldRef"):
        path = str(_d(vf["fieldRef"]).get("fieldPath", ""))
        value = field_value(pod, path, ctx)
        return value if value is not None else Failure(CONFIG_ERROR,
                                                       f"unsupported fieldPath: {path}")
    if vf.get("resourceFieldRef"):
        ref = _d(vf["resourceFieldRef"])
        value = resource_value(pod, str(ref.get("containerName") or cname), ref, ctx)
        return value if value is not None else Failure(
            CONFIG_ERROR, f"unsupported resourceFieldRef: {ref.get('resource')}")
    for kind, key, store in (("configmap", "configMapKeyRef", sources.configmaps),
                             ("secret", "secretKeyRef", sources.secrets)):
        ref = _d(vf.get(key))
        if not ref:
            continue
        name, k = str(ref.get("name", "")), str(ref.get("key", ""))
        data = store.get(name)
        if data is None:
            return None if ref.get("optional") else Failure(CONFIG_ERROR,
                                                            f'{kind} "{name}" not found')
        if k not in data:
            return None if ref.get("optional") else Failure(
                CONFIG_ERROR, f"couldn't find key {k} in {kind.capitalize()} "
                              f"{meta(pod).get('namespace')}/{name}")
        return data[k].decode("utf-8", "replace")
    return Failure(CONFIG_ERROR, f"unsupported valueFrom: {sorted(vf)}")


# ---- security context ----------------------------------------------------------------------

@dataclass(frozen=True)
class Credentials:
    uid: int
    gid: int
    groups: tuple[int, ...]
    caps: frozenset[str] | None
    no_new_privs: bool


def credentials(pod: Obj, container: Obj, image: Image) -> Credentials | Failure:
    """User, groups and capabilities: the container's securityContext over the pod's over
    the image's USER; capabilities are the runtime's default set minus ``drop`` plus ``add``
    (the bounding set: a root process keeps exactly these, a non-root one gets none, as
    Kubernetes grants no ambient capabilities)."""
    psc, csc = _d(spec(pod).get("securityContext")), _d(container.get("securityContext"))

    def pick(key: str) -> Any:
        return csc[key] if csc.get(key) is not None else psc.get(key)

    uid_v, gid_v = pick("runAsUser"), pick("runAsGroup")
    uid = int(uid_v) if uid_v is not None else image.user[0]
    # No runAsGroup: the image's group for the image's user, else root's (a uid without an
    # /etc/passwd entry in the image gets gid 0).
    image_gid = image.user[1] if uid == image.user[0] else 0
    gid = int(gid_v) if gid_v is not None else image_gid
    if pick("runAsNonRoot") and uid == 0:
        return Failure(CONFIG_ERROR, "container has runAsNonRoot and image will run as root "
                                     f'(pod: "{pod_ref(pod)}", container: '
                                     f"{container.get('name')})")
    groups = [int(g) for g in _l(psc.get("supplementalGroups")) if isinstance(g, int)]
    if isinstance(psc.get("fsGroup"), int):
        groups.append(int(psc["fsGroup"]))
    caps: frozenset[str] | None
    if csc.get("privileged"):
        caps = None
    else:
        cap_spec = _d(csc.get("capabilities"))
        drop = {capabilities.normalize(str(c)) for c in _l(cap_spec.get("drop"))}
        add = {capabilities.normalize(str(c)) for c in _l(cap_spec.get("add"))}
        unknown = sorted((drop | add) - set(capabilities.NUMBERS) - {"ALL"})
        if unknown:
            return Failure(CONFIG_ERROR, f"unknown capabilities: {', '.join(unknown)}")
        base = set() if "ALL" in drop else set(capabilities.RUNTIME_DEFAULT) - drop
        caps = frozenset(capabilities.NUMBERS) if "ALL" in add else frozenset(base | add)
    no_new_privs = csc.get("allowPrivilegeEscalation") is False
    return Credentials(uid, gid, tuple(dict.fromkeys(groups)), caps, no_new_privs)


# ---- containers ------------------------------------------------------------------------------

def mounts(container: Obj, ctx: PodContext) -> tuple[Mount, ...] | Failure:
    out: list[Mount] = []
    for vm in (_d(m) for m in _l(container.get("volumeMounts"))):
        name, target = str(vm.get("name", "")), str(vm.get("mountPath", ""))
        if vm.get("subPath") or vm.get("subPathExpr"):
            return Failure(CONFIG_ERROR, f'volume mount "{name}": subPath is not supported by '
                                         "the lab node agent")
        source = ctx.volume_dirs.get(name)
        if source is None:
            return Failure(CONFIG_ERROR, f'volume mount "{name}": no such volume in the pod')
        if not target.startswith("/") or "\0" in target or "/../" in target + "/":
            return Failure(CONFIG_ERROR, f'volume mount "{name}": bad mountPath {target!r}')
        out.append(Mount(source, target, bool(vm.get("readOnly"))))
    return tuple(out)


def hostname(pod: Obj) -> str | None:
    """A pod with its own network gets its own UTS name, as a container does."""
    if spec(pod).get("hostNetwork"):
        return None
    return str(spec(pod).get("hostname") or meta(pod).get("name", ""))[:63]


def plan_container(pod: Obj, container: Obj, sources: Sources,
                   ctx: PodContext) -> LaunchPlan | Failure:
    image_ref = str(container.get("image", ""))
    entry = images.lookup(image_ref)
    if isinstance(entry, NotMapped):
        return Failure(entry.reason, entry.message)
    if container.get("stdin") or container.get("tty"):
        return Failure(CONFIG_ERROR, "stdin/tty containers are not supported by the lab "
                                     "node agent")
    env = container_env(pod, container, sources, ctx)
    if isinstance(env, Failure):
        return env
    services = service_env(ctx)

    def lookup(name: str) -> str | None:
        return env.get(name, services.get(name))

    command = [expand(str(w), lookup) for w in _l(container.get("command"))]
    args = [expand(str(w), lookup) for w in _l(container.get("args"))]
    resolved = images.resolve(image_ref, command or None, args or None, ctx.box)
    if isinstance(resolved, NotMapped):
        return Failure(resolved.reason, resolved.message)
    creds = credentials(pod, container, entry)
    if isinstance(creds, Failure):
        return creds
    mnts = mounts(container, ctx)
    if isinstance(mnts, Failure):
        return mnts
    host = hostname(pod) or ctx.node_name
    # Image ENV first, the container's over it; then what the runtime adds when unset.
    final = dict(resolved.env)
    final.update(env)
    final.setdefault("HOSTNAME", host)
    # The runtime takes HOME from the image's /etc/passwd; "/" (its default) keeps a root
    # container from writing into this machine's own /root.
    final.setdefault("HOME", "/")
    return LaunchPlan(
        argv=resolved.argv, env=tuple(final.items()),
        cwd=str(container.get("workingDir") or "/"), uid=creds.uid, gid=creds.gid,
        groups=creds.groups, caps=creds.caps, no_new_privs=creds.no_new_privs, mounts=mnts,
        netns=ctx.netns, hostname=hostname(pod), image=entry)


def plan_exec(base: LaunchPlan, image_ref: str, command: list[str],
              box: Toolbox) -> LaunchPlan | Failure:
    """An exec probe runs "inside the container": its user, mounts, network and environment,
    with the probe's command (not ``$(VAR)``-expanded, as the kubelet does not)."""
    argv = images.local_argv(base.image, image_ref, tuple(str(w) for w in command), box)
    if isinstance(argv, NotMapped):
        return Failure(argv.reason, argv.message)
    return LaunchPlan(argv, base.env, base.cwd, base.uid, base.gid, base.groups, base.caps,
                      base.no_new_privs, base.mounts, base.netns, base.hostname, base.image)
