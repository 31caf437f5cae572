"""Helpers of the e2e suite: kubectl through subprocess, polling, the client (the "outside
world" of the cluster), the nodes as machines, and a BGP router.

Two runners share these tests (tests/e2e/conftest.py picks one):

- kind (kind/run-e2e.sh, Docker): kubectl and helm from PATH, a client container on the kind
  Docker network, node containers stopped with docker, FRR in a container;
- the lab cluster (tests/e2e/lab_backend.py, root): the same kubectl (``Cluster.kubectl_binary``
  is the one ``make binaries`` built), a client namespace on the lab's segment A, node
  namespaces whose cables are cut, FRR in the lab's router namespace.

Everything here shells out to the real tools, so the suite talks to the cluster exactly as a
user would.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

# A kubectl/docker call that hangs longer than this is a broken cluster, not a slow one.
COMMAND_TIMEOUT_S = 120.0


class E2EError(AssertionError):
    """A cluster-side expectation that did not come true in time."""


def run(argv: list[str], *, input_text: str | None = None, check: bool = True,
        timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, input=input_text, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise E2EError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float,
             interval: float = 1.0) -> T:
    """Polls ``probe`` until it returns something other than None (or raises E2EError)."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = probe()
        except (E2EError, subprocess.TimeoutExpired) as exc:
            value, last_error = None, str(exc)
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise E2EError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


@dataclass(frozen=True)
class Cluster:
    kubeconfig: str
    name: str
    namespace: str
    release: str
    image: str
    kubectl_binary: str = "kubectl"

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        argv = [self.kubectl_binary, "--kubeconfig", self.kubeconfig, *args]
        return run(argv, input_text=input_text, check=check).stdout

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = ["-n", namespace] if namespace else []
        obj: dict[str, Any] = json.loads(self.kubectl("get", kind, name, *ns, "-o", "json"))
        return obj

    def list(self, kind: str, namespace: str | None = None,
             selector: str | None = None) -> list[dict[str, Any]]:
        ns = ["-n", namespace] if namespace else ["-A"]
        sel = ["-l", selector] if selector else []
        items: list[dict[str, Any]] = json.loads(
            self.kubectl("get", kind, *ns, *sel, "-o", "json"))["items"]
        return items

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "-f", "-", input_text=manifest)

    def delete(self, manifest: str) -> None:
        self.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                     input_text=manifest, check=False)

    def service_vip(self, name: str, namespace: str, timeout: float = 90.0) -> str:
        def probe() -> str | None:
            svc = self.get("service", name, namespace)
            ingress = svc.get("status", {}).get("loadBalancer", {}).get("ingress") or []
            ips = [entry["ip"] for entry in ingress if entry.get("ip")]
            return ips[0] if ips else None
        return wait_for(f"a VIP on Service {namespace}/{name}", probe, timeout=timeout)

    def wait_rollout(self, kind: str, name: str, namespace: str, timeout: int = 180) -> None:
        self.kubectl("rollout", "status", f"{kind}/{name}", "-n", namespace,
                     f"--timeout={timeout}s")

    def node_addresses(self) -> dict[str, str]:
        """Node name -> InternalIP (the node container's address on the kind network)."""
        result = {}
        for node in self.list("nodes"):
            for addr in node["status"].get("addresses", []):
                if addr["type"] == "InternalIP" and ":" not in addr["address"]:
                    result[node["metadata"]["name"]] = addr["address"]
        return result


def docker(*args: str, check: bool = True, input_text: str | None = None,
           timeout: float = COMMAND_TIMEOUT_S) -> str:
    return run(["docker", *args], check=check, input_text=input_text, timeout=timeout).stdout


def container_mac(container: str, network: str = "kind") -> str:
    fmt = "{{(index .NetworkSettings.Networks \"" + network + "\").MacAddress}}"
    return docker("inspect", "-f", fmt, container).strip().lower()


def container_ip(container: str, network: str = "kind") -> str:
    fmt = "{{(index .NetworkSettings.Networks \"" + network + "\").IPAddress}}"
    return docker("inspect", "-f", fmt, container).strip()


# Runs inside the client container: one HTTP(S) request, prints a JSON line. Kept as a
# self-contained Python program because the Portico image (reused as the client) ships
# python3 but no curl.
_PROBE = r"""
import json, socket, ssl, sys, http.client
vip, port, host, scheme = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
timeout = float(sys.argv[5])
ca = sys.stdin.read()
try:
    conn = http.client.HTTPConnection(vip, port, timeout=timeout)
    if scheme == "https":
        # SNI and certificate check use the virtual host name, not the VIP.
        ctx = ssl.create_default_context(cadata=ca) if ca else ssl._create_unverified_context()
        raw = socket.create_connection((vip, port), timeout=timeout)
        conn.sock = ctx.wrap_socket(raw, server_hostname=host)
    conn.request("GET", "/", headers={"Host": host})
    resp = conn.getresponse()
    print(json.dumps({"status": resp.status, "location": resp.getheader("Location") or "",
                      "body": resp.read(4096).decode("utf-8", "replace")}))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
"""


class Client:
    """A long-lived container on the kind network, outside the cluster, used as the client."""

    def __init__(self, image: str) -> None:
        self.name = f"portico-e2e-client-{uuid.uuid4().hex[:8]}"
        docker("run", "-d", "--rm", "--name", self.name, "--network", "kind",
               "--entrypoint", "sleep", image, "3600")

    def close(self) -> None:
        docker("rm", "-f", self.name, check=False)

    def exec(self, *argv: str, input_text: str | None = None, check: bool = True) -> str:
        interactive = ["-i"] if input_text is not None else []
        return docker("exec", *interactive, self.name, *argv, input_text=input_text,
                      check=check)

    def request(self, vip: str, port: int = 80, host: str = "", scheme: str = "http",
                timeout: float = 2.0, ca_pem: str = "") -> dict[str, Any]:
        out = self.exec("python3", "-c", _PROBE, vip, str(port), host or vip, scheme,
                        str(timeout), input_text=ca_pem)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def udp_request(self, vip: str, port: int, payload: str = "hostname",
                    timeout: float = 2.0) -> str | None:
        """One datagram to vip:port from the client; the answer's text, None if none came."""
        prog = ("import socket, sys\n"
                "s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET,"
                " socket.SOCK_DGRAM)\n"
                "s.settimeout(float(sys.argv[4]))\n"
                "s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))\n"
                "try:\n    print(s.recv(2048).decode('utf-8', 'replace'))\n"
                "except OSError:\n    print('')\n")
        out = self.exec("python3", "-c", prog, vip, str(port), payload, str(timeout),
                        check=False).strip()
        return out or None

    def neighbour_mac(self, vip: str) -> str | None:
        """MAC address the client resolved the VIP to (its ARP cache), if any."""
        out = self.exec("ip", "neigh", "show", vip, check=False)
        fields = out.split()
        if "lladdr" in fields:
            return fields[fields.index("lladdr") + 1].lower()
        return None


class Machines:
    """The cluster's nodes as machines, for tests that look at or kill one (kind: the node
    containers on the kind network)."""

    def mac(self, node: str) -> str:
        """The MAC address of the node's interface on the client's network."""
        return container_mac(node)

    def stop(self, node: str) -> None:
        """A sudden node death: no graceful handover (kind: SIGKILL of the container)."""
        docker("stop", "--time", "0", node)

    def start(self, node: str) -> None:
        docker("start", node, check=False)


class Router(Protocol):
    """A BGP router peering with every node (FRR), as the BGP tests need it."""

    address: str  # the address the nodes peer with

    def routes(self, vip: str) -> list[str]:
        """Next hops of the router's selected BGP route to ``vip``/32 (sorted)."""
        ...

    def http_get(self, vip: str) -> str | None:
        """The body of ``http://VIP/`` fetched from the router, None when nothing answered."""
        ...

    def close(self) -> None: ...


def frr_route_next_hops(show_ip_route_json: str, vip: str) -> list[str]:
    """Next hops of the selected BGP route in FRR's ``show ip route VIP/32 json``."""
    try:
        data = json.loads(show_ip_route_json or "{}")
    except json.JSONDecodeError:
        return []
    hops: list[str] = []
    for route in data.get(f"{vip}/32", []):
        if route.get("protocol") == "bgp" and route.get("selected"):
            hops += [h["ip"] for h in route.get("nexthops", []) if h.get("ip")]
    return sorted(set(hops))


KIND_FRR_DAEMONS = """\
zebra=yes
bgpd=yes
vtysh_enable=yes
zebra_options="  -A 127.0.0.1 -s 90000000"
bgpd_options="   -A 127.0.0.1"
"""


def kind_frr_config(router_asn: int, node_asn: int, neighbours: list[str]) -> str:
    lines = [
        "frr defaults traditional",
        "hostname e2e-router",
        "log stdout informational",
        f"router bgp {router_asn}",
        # FRR 8+ drops eBGP routes without an explicit policy unless told otherwise.
        " no bgp ebgp-requires-policy",
        " bgp bestpath as-path multipath-relax",
    ]
    lines += [f" neighbor {n} remote-as {node_asn}" for n in neighbours]
    lines += [" address-family ipv4 unicast", "  maximum-paths 8", " exit-address-family", ""]
    return "\n".join(lines)


class KindRouter:
    """FRR in a container on the kind network peering with every node."""

    def __init__(self, cluster: Cluster, conf_dir: Any, router_asn: int, node_asn: int,
                 image: str) -> None:
        self.name = f"portico-e2e-frr-{uuid.uuid4().hex[:8]}"
        nodes = sorted(cluster.node_addresses().values())
        # Mounted as FRR's whole /etc/frr (its start script chowns it), so it must outlive
        # the container.
        (conf_dir / "daemons").write_text(KIND_FRR_DAEMONS)
        (conf_dir / "vtysh.conf").write_text("service integrated-vtysh-config\n")
        (conf_dir / "frr.conf").write_text(kind_frr_config(router_asn, node_asn, nodes))
        conf_dir.chmod(0o755)
        docker("run", "-d", "--name", self.name, "--network", "kind",
               "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW", "--cap-add", "SYS_ADMIN",
               "-v", f"{conf_dir}:/etc/frr", image)
        self.address = container_ip(self.name)

    def routes(self, vip: str) -> list[str]:
        out = docker("exec", self.name, "vtysh", "-c", f"show ip route {vip}/32 json",
                     check=False)
        return frr_route_next_hops(out, vip)

    def http_get(self, vip: str) -> str | None:
        # busybox wget in the FRR image
        return docker("exec", self.name, "wget", "-q", "-T", "3", "-O", "-",
                      f"http://{vip}/", check=False) or None

    def close(self) -> None:
        docker("rm", "-f", self.name, check=False)


AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"


def manifest(*objects: dict[str, Any]) -> str:
    """A kubectl-appliable v1 List (JSON is YAML)."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def web_app(name: str, ns: str, *, replicas: int = 2,
            on_control_plane: bool = False) -> dict[str, Any]:
    """A Deployment answering HTTP on 8080 with its pod name (agnhost serve-hostname)."""
    spec: dict[str, Any] = {
        "containers": [{
            "name": "web",
            "image": AGNHOST,
            "args": ["serve-hostname", "--http", "--port", "8080"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2},
        }],
    }
    if on_control_plane:
        spec["nodeSelector"] = {"node-role.kubernetes.io/control-plane": ""}
        spec["tolerations"] = [{"key": "node-role.kubernetes.io/control-plane",
                                "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def lb_service(name: str, ns: str, *, app: str, pool: str, traffic_policy: str = "Cluster",
               ips: str = "") -> dict[str, Any]:
    annotations = {"lb.portico.dev/address-pool": pool}
    if ips:
        annotations["lb.portico.dev/loadBalancerIPs"] = ips
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": traffic_policy,
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def in_range(address: str, rng: str) -> bool:
    """Whether ``address`` lies in an "a-b" range."""
    first, last = (int(ipaddress.ip_address(part.strip())) for part in rng.split("-"))
    return first <= int(ipaddress.ip_address(address)) <= last
