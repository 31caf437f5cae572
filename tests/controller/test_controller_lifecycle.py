"""Class filtering, release, dual stack, huge pools, restart without moving addresses."""

from __future__ import annotations

import ipaddress

from common.kube.resources import IPADDRESSPOOLS, NAMESPACES, SERVICES

from .conftest import Lab, eventually, eventually_passes, pool, service


def test_class_filter_and_release_on_type_change(lab: Lab) -> None:
    lab.store.create(IPADDRESSPOOLS, pool("p", "192.0.2.0/30"))
    lab.store.create(SERVICES, service("mine"), namespace="default")
    lab.store.create(SERVICES, service("ours-by-class", loadBalancerClass="portico"),
                     namespace="default")
    lab.store.create(SERVICES, service("theirs", loadBalancerClass="other.io/lb"),
                     namespace="default")
    lab.start(lb_class="portico")
    assert lab.wait_ips("mine") == ["192.0.2.0"]
    assert lab.wait_ips("ours-by-class") == ["192.0.2.1"]
    obj = lab.svc("mine")
    obj["spec"]["type"] = "ClusterIP"
    lab.store.update(SERVICES, obj)
    eventually(lambda: lab.ips("mine") == [] and lab.condition("mine") is None)
    lab.store.create(SERVICES, service("next"), namespace="default")
    assert lab.wait_ips("next") == ["192.0.2.0"]  # the released address is reused
    assert lab.ips("theirs") == [] and lab.condition("theirs") is None


def test_dual_stack_and_exact_counts_for_a_slash_64(lab: Lab) -> None:
    lab.store.create(IPADDRESSPOOLS, pool("big", "198.18.0.0/15", "2001:db8:1::/64"))
    lab.store.create(SERVICES, service("ds", ipFamilies=["IPv6", "IPv4"],
                                       ipFamilyPolicy="RequireDualStack"), namespace="default")
    lab.start()
    assert lab.wait_ips("ds", 2) == ["2001:db8:1::", "198.18.0.0"]

    def check() -> None:
        st = lab.pool_status("big")
        assert st["ipv6"] == {"total": str(2**64), "assigned": "1", "available": str(2**64 - 1)}
        assert st["ipv4"] == {"total": str(2**17), "assigned": "1", "available": str(2**17 - 1)}
    eventually_passes(check)


def test_namespace_label_change_reevaluates(lab: Lab) -> None:
    ns = lab.store.get(NAMESPACES, "default")
    assert ns is not None
    lab.store.create(IPADDRESSPOOLS, pool(
        "team", "203.0.113.0/30",
        serviceAllocation={"priority": 1, "namespaceSelectors": [
            {"matchLabels": {"team": "a"}}]}))
    lab.store.create(IPADDRESSPOOLS, pool("generic", "192.0.2.0/30"))
    lab.store.create(SERVICES, service("s"), namespace="default")
    lab.start()
    assert lab.wait_ips("s") == ["192.0.2.0"]
    ns["metadata"]["labels"] = {"team": "a"}
    lab.store.update(NAMESPACES, ns)
    ctl = lab.controller
    assert ctl is not None
    # (The real server adds kubernetes.io/metadata.name to every namespace's labels.)
    eventually(lambda: (ctl.namespaces.store.get(None, lab.ns) or {})
               .get("metadata", {}).get("labels", {}).get("team") == "a")
    # Its address stays valid (generic pool), so it is not moved: never move a working VIP.
    lab.store.create(SERVICES, service("t"), namespace="default")
    assert lab.wait_ips("t") == ["203.0.113.0"]
    assert lab.ips("s") == ["192.0.2.0"]


def test_restart_rebuilds_from_status_without_moving(lab: Lab) -> None:
    lab.store.create(IPADDRESSPOOLS, pool("p", "192.0.2.0/29"))
    for i in range(6):
        lab.store.create(SERVICES, service(f"s{i}"), namespace="default")
    lab.start()
    before = {f"s{i}": lab.wait_ips(f"s{i}") for i in range(6)}
    lab.stop()
    # While no controller runs: two Services go away, a new one (sorting first) arrives.
    lab.store.delete(SERVICES, "s0", "default")
    lab.store.delete(SERVICES, "s3", "default")
    lab.store.create(SERVICES, service("a-new"), namespace="default")
    lab.start()
    for name in ("s1", "s2", "s4", "s5"):
        assert lab.wait_ips(name) == before[name], name
    # The newcomer gets the lowest address that is free, never one somebody still shows.
    assert lab.wait_ips("a-new") == ["192.0.2.0"]
    lab.assert_consistent()


def test_pool_shrink_rehomes_and_releases(lab: Lab) -> None:
    lab.store.create(IPADDRESSPOOLS, pool("p", "192.0.2.0/30"))
    for i in range(3):
        lab.store.create(SERVICES, service(f"s{i}"), namespace="default")
    lab.start()
    assert [lab.wait_ips(f"s{i}")[0] for i in range(3)] == ["192.0.2.0", "192.0.2.1",
                                                            "192.0.2.2"]
    obj = lab.store.get(IPADDRESSPOOLS, "p")
    assert obj is not None
    obj["spec"]["addresses"] = ["192.0.2.0/31", "203.0.113.0/31"]
    lab.store.update(IPADDRESSPOOLS, obj)

    def check() -> None:
        assert lab.ips("s0") == ["192.0.2.0"] and lab.ips("s1") == ["192.0.2.1"]
        assert lab.ips("s2") == ["203.0.113.0"]
    eventually_passes(check)
    assert all(ipaddress.ip_address(lab.ips(f"s{i}")[0]) for i in range(3))
