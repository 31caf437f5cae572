"""The node agent plans every pod of the Gateway API conformance suite's base manifests
(the cached copy `make binaries` keeps beside the suite): echo-basic runs the real echo
server built from its Go module, coredns the lab's stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.controlplane import binaries
from lab.nodeagent import images, plan
from lab.nodeagent.agent import built_programs
from lab.nodeagent.images import NotMapped, Toolbox

ECHO = "/cache/bin/gateway-api-v1.6.3/echo-basic"
BOX = Toolbox(python="/venv/bin/python", bin_dir="/venv/bin", repo="/repo",
              built=((images.ECHO_BASIC, ECHO),))


def _base_manifests() -> list[dict[str, Any]]:
    path = (binaries.product_dir(binaries.product("gateway-api")) / "base" / "manifests.yaml")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pods() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in _base_manifests():
        if d["kind"] == "Deployment":
            tpl = d["spec"]["template"]
            pod = {"metadata": {**tpl["metadata"], "name": d["metadata"]["name"] + "-x",
                                "namespace": d["metadata"]["namespace"]},
                   "spec": tpl["spec"]}
            out.append((f"{d['metadata']['namespace']}/{d['metadata']['name']}", pod))
    return out


def _context(pod: dict[str, Any]) -> plan.PodContext:
    vols = {str(v["name"]): f"/state/{v['name']}" for v in pod["spec"].get("volumes") or []}
    return plan.PodContext(node_name="node2", pod_ips=("198.18.2.5",), host_ips=("192.0.2.12",),
                           api_host="198.19.0.1", api_port=443, box=BOX, netns="pod-ns",
                           volume_dirs=vols)


def test_every_base_manifest_container_plans() -> None:
    pods = _pods()
    assert len(pods) >= 10
    for ref, pod in pods:
        for c in pod["spec"]["containers"]:
            lp = plan.plan_container(pod, c, plan.Sources(), _context(pod))
            assert isinstance(lp, plan.LaunchPlan), (ref, lp)
            env = dict(lp.env)
            if images.repository(c["image"]) == images.ECHO_BASIC_REPOSITORY:
                assert lp.argv == (ECHO,), ref
                assert (lp.uid, lp.gid) == images.DISTROLESS_NONROOT
                assert env["POD_NAME"] == pod["metadata"]["name"]
                assert env["NAMESPACE"] == pod["metadata"]["namespace"]
            else:
                assert images.repository(c["image"]) == images.COREDNS_REPOSITORY
                assert lp.argv == (images.SYSTEM_PYTHON, "-m", "lab.dnsstub", "-conf",
                                   "/root/Corefile")
                assert lp.caps == frozenset({"NET_BIND_SERVICE"}) and lp.no_new_privs


def test_echo_basic_not_built_says_make_binaries() -> None:
    box = Toolbox(python="/venv/bin/python", bin_dir="/venv/bin", repo="/repo")
    r = images.resolve("registry.k8s.io/gateway-api/echo-basic:v1.5.1", None, None, box)
    assert isinstance(r, NotMapped)
    assert r.reason == images.REASON_NOT_MAPPED and "make binaries" in r.message


@pytest.mark.parametrize("tag", ["v1.5.1", "v1.6.0-dev.3"])
def test_echo_basic_tags_are_one_image(tag: str) -> None:
    r = images.resolve(f"registry.k8s.io/gateway-api/echo-basic:{tag}", None, None, BOX)
    assert not isinstance(r, NotMapped)
    assert r.argv == (ECHO,)


def test_the_cached_echo_server_is_what_the_agent_finds() -> None:
    assert dict(built_programs())[images.ECHO_BASIC] == str(binaries.binary("echo-basic"))
    assert Path(dict(built_programs())[images.ECHO_BASIC]).exists()
