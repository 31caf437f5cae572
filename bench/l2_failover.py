"""Layer-2 failover as a client sees it: outage per scenario over many trials.

    sudo .venv/bin/python -m bench.l2_failover [--trials 20] [--png PATH]
    sudo .venv/bin/python -m bench.l2_failover --lab-cluster [--trials 10]  # chart's speakers
    sudo .venv/bin/python -m bench.l2_failover --lab-cluster --metallb --families 4,6 \
        --scenarios cut,cutall,kill,term,freeze --trials 3 --max-minutes 80   # + MetalLB
    sudo .venv/bin/python -m bench.l2_failover --compare --scenarios cut --trials 10
        [--lab-probe syn]  # today's lab probed with TCP SYNs too (like for like)
    sudo .venv/bin/python -m bench.l2_failover --scenarios cut,freeze --families 4,6 --trials 10
    sudo .venv/bin/python -m bench.l2_failover --soak-seconds 600 --hogs   # no fault at all

Builds the namespace lab (lab.topology: 3 nodes, router, client, API emulator, controller if
present, one real speaker per node), gives a Service a VIP, and runs a 100 Hz prober in the
client namespace:

* data path: ICMP echo to the VIP through the client kernel (so the client's real ARP cache
  decides where packets go — exactly what an application sees); each reply is attributed to
  the node by the source MAC of the reply frame (an AF_PACKET socket on the client's NIC);
* control path: an ARP "who-has VIP" every 10 ms from a made-up sender (so the client's own
  ARP cache is never refreshed by it), recording every MAC that answers — two MACs answering
  the same round is a split brain.

Scenarios, each ``--trials`` times against the current owner of the VIP:
  (a) kill  — the owner's speaker gets SIGKILL (the node itself stays up)
  (b) cut   — the owner's cable is pulled at the switch (node unreachable)
  (c) term  — the owner's speaker gets SIGTERM (graceful hand-over)
  (d) freeze — the owner's speaker (its process group: the speaker and its heartbeat process)
      gets SIGSTOP, and SIGCONT ``--freeze-seconds`` (3 s) later; the trial watches 2.5 s more:
      the woken speaker must answer nothing stale ("late" answers) and the VIP must not move
      straight back ("moves": 1 = one takeover; the hold-down returns it later)
after each trial the speaker is restarted / the cable re-plugged and the VIP returns (after
the liveness hold-down, ``--liveness-holddown``, 5 s).

``--families 4,6``: each scenario against an IPv4 VIP (ARP, ICMP echo) and an IPv6 VIP (NDP:
Neighbor Solicitations per round, ICMPv6 echo), trials interleaved.

``--soak-seconds N [--hogs]``: no fault at all for N seconds while every speaker runs and every
link is up; with ``--hogs`` one CPU hog per core at nice -10 (a higher priority than the
speakers) and a memory-churn process (``--hog-mem-mb``, pages allocated, touched and freed in
a loop) run meanwhile — every one bounded by the soak's length and killed by PID at the end,
also on failure. Counted: takeovers (``l2_ownership`` log lines that gain a VIP), changes of
any speaker's live set, rounds answered by a MAC other than the owner's, overlap rounds, and
the heartbeat processes' own stalls. Target: zero takeovers. ``--liveness-in-process`` is the
control: the same with the heartbeats inside the speaker process (no real-time child).

Printed per scenario and family: lost probes and data-path outage (longest run of lost echo
replies x 10 ms) as p50/p99/max; "arp gap" (longest time no MAC answered ARP/NDP for the VIP);
takeover time (fault -> first answer from the new owner); overlap rounds (ARP/NDP rounds
answered by two or more MACs — a single round counts: a client asking then may cache
either); the most moves of the answer in one trial; late answers (the faulted owner answering
rounds sent after the takeover). Targets: (b) cut p99 outage < 300 ms; (a), (d) < 1 s; (c)
zero lost probes; (d) no late answer and one move; no overlap round in (a), (b), (d).
Note (a): the killed speaker's node still delivers traffic sent to its MAC, so the data path
often loses nothing; the ARP gap shows the takeover itself.

``--lab-cluster``: the same trials on the lab cluster (``lab.labcluster.LabCluster``: the real
control plane, node agents, the real kube-proxy, Portico from ``helm install charts/portico``:
the speakers are the chart's DaemonSet pods, run by the lab's node agents). A Deployment of
agnhost ``serve-hostname`` pinned to the control-plane node ``node1`` (which is never faulted
and never announces: the chart's L2Advertisement selects the workers) backs one LoadBalancer
Service (externalTrafficPolicy Cluster) per family: IPv4 ``CLUSTER_VIP``, and with
``--families 6`` a SingleStack IPv6 Service (``ipFamilies: [IPv6]``) asking for
``CLUSTER_VIP6`` from the chart cluster's IPv6 pool (``L2_POOL6``); only the announcement
moves. Scenarios (``CLUSTER_SCENARIOS``), each against the owner node's speaker pod:

* ``cut``: the owner's segment-A cable at the switch (today's fault). The management cable
  stays plugged, so the node agent, its pods and the speaker keep talking to the API server:
  the client-facing link died, the node did not. ``cutall`` also pulls the management cable (a
  dead node, as tests/e2e's LabMachines.stop does); within a trial's few seconds the API
  server notices nothing either way (node lease 40 s): both measure the speakers' own
  detection.
* ``kill``: SIGKILL to every process of the owner's speaker container — what an OOM kill of
  the container's cgroup does. The node agent reports a container as ``portico-lab://PID``;
  it starts each container in a session of its own whose group id is that PID, so the
  bench signals the process group (Portico's speaker and its heartbeat child; MetalLB's one
  process). The agent then restarts the container (restartPolicy Always) as a kubelet would;
  the restore waits until the pod is Running and Ready with a new container.
* ``term``: graceful stop as Kubernetes does it: the owner's speaker pod is deleted with its
  default grace period (the DELETE that ``kubectl delete pod`` sends, made through the
  control plane's admin client so that no kubectl start-up sits between the fault time and
  the deletion); the node agent sends the container SIGTERM (SIGKILL after the grace period,
  10 s in the chart) and the DaemonSet controller creates a new pod, which the restore waits
  for (Running and Ready).
* ``freeze``: SIGSTOP to the container's process group, SIGCONT ``--freeze-seconds`` later,
  then AFTER_WAKE more observed (as in today's lab).

Every restore is bounded (pod Ready within ``POD_READY_TIMEOUT_S``, the VIP back on the
original owner within ``RESTORE_TIMEOUT_S``); a restore that fails is reported (JSON
``restore_failures``) and the run goes on. Before each trial the bench waits (bounded) until
the VIP is on its home node again (its owner when all is healthy), because another mode's
fault on a shared node moves it too. Portico's kill and term trials observe
``CLUSTER_POD_OBSERVE_S`` (5 s), cut and cutall OBSERVE. In kill and freeze the owner's node
still forwards traffic sent to its MAC (kube-proxy does, not the speaker), so the data path
usually loses nothing; the ARP/NDP gap shows the takeover itself.

The data path is a TCP SYN per probe to VIP:80 ([VIP6]:80 for IPv6: ``lab.failover.
Syn6Prober``), answered (SYN-ACK) through kube-proxy by a backend pod and attributed to the
node by the reply frame's source MAC: kube-proxy forwards the Service's ports only, so an
ICMP echo to a VIP gets no answer on a real cluster. The control path is the ARP round (IPv4)
or Neighbor Solicitation round (IPv6) every 10 ms from made-up senders. A node whose NA comes
from its kernel (MetalLB answers NDP through an ICMPv6 socket) must first resolve the asking
address, so the prober answers Neighbor Solicitations for its made-up senders from its own
MAC, like any IPv6 host (Portico builds its NA frames itself and never asks).

``--metallb`` (with ``--lab-cluster``): MetalLB on the same lab cluster as second modes
(``metallb-lab-cluster-ipv4`` / ``-ipv6``): the release's manifest with
``lab.metallb.LAB_CHANGES``, its own ``loadBalancerClass``, its own pools (``METALLB_RANGE``
and the IPv6 ``METALLB_RANGE6``, both outside Portico's) and VIPs (asked for with MetalLB's
annotation), memberlist on ``METALLB_ML_PORT``; the same backend pods, prober, scenarios and
trials, interleaved with Portico's (one trial of each mode in turn). MetalLB learns of a dead
node from memberlist (seconds): its trials observe ``METALLB_OBSERVE_S`` (15 s) except freeze
(the same window as Portico's), and after each trial the bench waits up to
``METALLB_HEAL_TIMEOUT_S`` for its VIP to be back on the original owner, recording how long
two nodes answered meanwhile (JSON ``after_restore``). The table of each mode (one family
each) is printed, then per family the MetalLB/Portico ratios of outage, gap and takeover
(p50/p99/max) and both modes' overlap rounds per scenario. In MetalLB's kill/term trials the
restarted pod on the same node takes the VIP back within the window: its answers after the
takeover count as "late" and the return as a second move (not stale answers).

``--compare``: both labs at once (they share nothing but the machine) and the trials
interleaved, one trial of each mode in turn, so both see the same machine load.

Results: ``bench/results/l2_failover-<mode>-<time>.json`` per mode (``lab-ipv4``,
``lab-cluster-ipv6``, ``metallb-lab-cluster-ipv4``, ...) and a PNG next to it (the trial with
the worst outage of ``--png-scenario``), and ``l2_failover-ratio-metallb-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import pct
from lab import netns
from lab.failover import (
    INTERVAL,
    NdpProber,
    Prober,
    SpeakerPods,
    Syn6Prober,
    SynProber,
    Trial,
    analyse,
    count_overlaps,
    current_owner,
    log_events,
    speaker_group_signal,
)
from lab.hogs import start_hogs, stop_hogs
from lab.topology import CLIENT_HOST, SEG_A4, SEG_A6, Lab
from lab.wait import wait_until

VIP = "192.0.2.210"
VIP6 = "2001:db8:a::1:10"
SETTLE = 0.6  # s of steady probing before a fault
OBSERVE = 3.0  # s after the fault that a trial records
FREEZE_S = 3.0  # s the owner's speaker stays stopped in scenario freeze
AFTER_WAKE = 2.5  # s a freeze trial keeps recording after SIGCONT (stale answers, flaps)
SOAK_CHUNK = 10.0  # s of probe records analysed at a time during a soak
HOG_GRACE = 60.0  # s a hog outlives the soak at most if the bench itself died (self-bounded)
TARGET_CUT_P99_MS = 300.0
REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
# Lab cluster: the VIP (inside lab.labcluster.L2_RANGE) and the bench's own objects.
CLUSTER_VIP = "192.0.2.210"
CLUSTER_NS = "bench-l2"
CLUSTER_APP = "steady"
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
CLUSTER_SCENARIOS = ("cut", "cutall", "kill", "term", "freeze")
# IPv6 (--families 6): a SingleStack IPv6 Service of its own from the chart cluster's IPv6
# pool (lab.labcluster L2_POOL6 / L2_RANGE6: 2001:db8:a::1:c8-2001:db8:a::1:db).
CLUSTER_VIP6 = "2001:db8:a::1:d0"
CLUSTER_APP6 = "steady6"
RESTORE_TIMEOUT_S = 30.0
# kill/term: the node agent restarts the killed container at once (first restart) or after its
# crash-loop back-off (lab.labcluster.AGENT_ARGS: 1 s doubling to 10 s), and a deleted pod is
# recreated by the DaemonSet controller, scheduled and started: Ready within this, or the
# trial fails.
POD_READY_TIMEOUT_S = 90.0
# kill/term on Portico: what the chart's speakers do within a few seconds (a graceful stop
# takes up to the pod's grace period, 10 s in the chart, if the speaker overran it).
CLUSTER_POD_OBSERVE_S = 5.0
# --metallb: MetalLB (lab.metallb, built from its Go module) on the same lab cluster, serving
# only Services of its own loadBalancerClass from its own range of segment A (outside
# Portico's e2e pool), memberlist moved off Portico's heartbeat port 7946.
METALLB_CLASS = "bench.portico.dev/metallb"
METALLB_POOL, METALLB_RANGE = "bench-metallb", "192.0.2.220-192.0.2.223"
METALLB_VIP = "192.0.2.220"
METALLB_APP = "steady-metallb"
# IPv6: segment A's VIP range (2001:db8:a::1:0/112), outside Portico's pool ::1:c8-::1:db.
METALLB_POOL6, METALLB_RANGE6 = "bench-metallb6", "2001:db8:a::1:e0-2001:db8:a::1:e3"
METALLB_VIP6 = "2001:db8:a::1:e0"
METALLB_APP6 = "steady-metallb6"
METALLB_ML_PORT = 7947
# MetalLB learns of a dead node from memberlist (suspicion, then dead): seconds, not
# milliseconds, so its trials watch longer than OBSERVE, or the outage would be the window.
METALLB_OBSERVE_S = 15.0
# After the cable is back, a cut MetalLB speaker that declared the others dead keeps
# announcing until memberlist merges again (MetalLB rejoins every minute or on a Node event):
# the bench waits for that, up to this long, and records how long two nodes answered.
METALLB_HEAL_TIMEOUT_S = 120.0


@dataclass
class Mode:
    """One lab the trials run on: how to cut and restore the owner, and the trials so far."""

    name: str  # "lab" or "lab-cluster"
    lab: Lab
    vip: str
    prober: Prober
    probe: str  # what the data path sends: "icmp-echo" or "tcp-syn"
    fault: Callable[[str, str], None]  # (scenario, owner node)
    restore: Callable[[str, str], None]
    scenarios: tuple[str, ...]
    results: dict[str, list[Trial]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    family: int = 4
    observe: dict[str, float] = field(default_factory=dict)  # per scenario, else OBSERVE
    # Lab cluster: the VIP's owner when everything is healthy, and how long to wait for the
    # VIP to be back there before a trial (another mode's fault on a shared node moves it too).
    # (taken at the first trial, once the probers run: a node that answers NDP from its kernel
    # can only answer the made-up asker of Lab.who_has when the prober resolves it).
    settle: bool = False
    home: str | None = None
    settle_timeout: float = RESTORE_TIMEOUT_S


def run_mode_trial(mode: Mode, scenario: str) -> Trial:
    """``run_trial`` for either lab: the fault and the restore are the mode's."""
    lab, vip = mode.lab, mode.vip
    if mode.settle and mode.home is None:
        mode.home = current_owner(lab, vip)[0]
        mode.info["home"] = mode.home
    if mode.home is not None:
        home_mac = lab.node(mode.home).mac_a
        try:
            wait_until(lambda: lab.who_has(vip, timeout=0.2) == {home_mac},
                       mode.settle_timeout, what=f"{mode.name}: VIP on {mode.home}")
        except AssertionError as exc:  # reported; the trial faults whoever owns it now
            mode.info.setdefault("not_home_before_trial", []).append(scenario)
            print(f"{mode.name}: {exc}", flush=True)
    owner, owner_mac = current_owner(lab, vip)
    time.sleep(SETTLE)
    mode.prober.reset()
    time.sleep(SETTLE)
    t_fault = time.monotonic()
    mode.fault(scenario, owner)
    time.sleep(mode.observe.get(scenario, OBSERVE))
    rec = mode.prober.reset()
    trial = analyse(scenario, owner, owner_mac, rec, t_fault, lab)
    if not mode.settle:  # today's lab: a failed restore ends the run
        mode.restore(scenario, owner)
        wait_until(lambda: lab.who_has(vip, timeout=0.2) == {owner_mac}, RESTORE_TIMEOUT_S,
                   what=f"{mode.name}: VIP back on the original owner")
        return trial
    # Lab cluster: a restore that times out (a pod not Ready, the VIP elsewhere) is reported
    # and the run goes on; the next trial first waits for the VIP to be home again.
    try:
        mode.restore(scenario, owner)
        wait_until(lambda: lab.who_has(vip, timeout=0.2) == {owner_mac}, RESTORE_TIMEOUT_S,
                   what=f"{mode.name}: VIP back on the original owner")
    except (AssertionError, RuntimeError, OSError) as exc:
        mode.info.setdefault("restore_failures", []).append(
            {"scenario": scenario, "owner": owner, "error": str(exc)[:500]})
        print(f"{mode.name} {scenario}: RESTORE FAILED: {exc}", flush=True)
    return trial


def lab_setup(lab: Lab) -> None:
    """Pools, the advertisement, speakers, and one Service per family (VIP and VIP6)."""
    lab.add_pool("a4", ["192.0.2.192/27"])
    lab.add_pool("a6", ["2001:db8:a::1:0/112"])
    lab.add_l2("seg-a", ipAddressPools=["a4", "a6"])
    lab.start_speakers()
    lab.wait_speakers_live()
    lab.add_service("bench", ips=[VIP])
    lab.add_service("bench6", ips=[VIP6])
    wait_until(lambda: lab.service_ips("bench") == [VIP], 20, what="VIP assigned")
    wait_until(lambda: lab.service_ips("bench6") == [VIP6], 20, what="VIP6 assigned")
    current_owner(lab, VIP)
    current_owner(lab, VIP6)


def lab_mode(lab: Lab, probe: str = "icmp", family: int = 4, freeze_s: float = FREEZE_S,
             realtime_probe: bool = False) -> Mode:
    """Today's lab: emulator (or real control plane), speakers started by hand (``lab_setup``
    first). ``probe`` "syn": TCP SYNs to VIP:80 (each node's lab.backend answers) instead of
    ICMP echoes, the lab cluster's data path, for a like-for-like comparison (IPv4 only)."""
    vip = VIP if family == 4 else VIP6
    timers: list[threading.Timer] = []

    def fault(scenario: str, owner: str) -> None:
        if scenario == "kill":
            lab.stop_proc(f"speaker-{owner}", signal.SIGKILL)
        elif scenario == "cut":
            lab.cut_link(owner)
        elif scenario == "term":
            threading.Thread(target=lab.stop_proc,
                             args=(f"speaker-{owner}", signal.SIGTERM), daemon=True).start()
        elif scenario == "freeze":
            speaker_group_signal(lab, owner, signal.SIGSTOP)
            timer = threading.Timer(freeze_s, speaker_group_signal,
                                    (lab, owner, signal.SIGCONT))
            timers.append(timer)
            timer.start()

    def restore(scenario: str, owner: str) -> None:
        if scenario == "cut":
            lab.cut_link(owner, up=True)
        elif scenario == "freeze":
            for timer in timers:
                timer.join()
            timers.clear()
            speaker_group_signal(lab, owner, signal.SIGCONT)  # in case: never leave it stopped
        else:
            lab.stop_proc(f"speaker-{owner}", signal.SIGKILL, wait=5)
            lab.start_speaker(owner)

    prober: Prober
    if family == 6:
        prober = NdpProber(lab.client, "pl-eth0", vip, realtime=realtime_probe)
    elif probe == "syn":
        prober = SynProber(lab.client, "pl-eth0", vip, f"{SEG_A4}.{CLIENT_HOST}", 80)
    else:
        prober = Prober(lab.client, "pl-eth0", vip, realtime=realtime_probe)
    data = ("icmpv6-echo" if family == 6 else "tcp-syn" if probe == "syn" else "icmp-echo")
    return Mode(f"lab-ipv{family}", lab, vip, prober, data, fault, restore,
                ("kill", "cut", "term", "freeze"), family=family,
                observe={"freeze": freeze_s + AFTER_WAKE})


def cluster_manifest(families: tuple[int, ...] = (4,)) -> str:
    """Namespace, a Deployment of agnhost serve-hostname (HTTP on 8080, readiness probe) on
    the control-plane node, and a LoadBalancer Service (ETP Cluster) per family asking for
    the VIP (IPv4) / VIP6 (SingleStack IPv6 from the chart cluster's IPv6 pool)."""
    from lab.labcluster import CONTROL_PLANE_ROLE, L2_POOL, L2_POOL6

    pod: dict[str, Any] = {
        "nodeSelector": {CONTROL_PLANE_ROLE: ""},
        "tolerations": [{"key": CONTROL_PLANE_ROLE, "operator": "Exists",
                         "effect": "NoSchedule"}],
        "containers": [{
            "name": "web", "image": AGNHOST,
            "args": ["serve-hostname", "--http", "--port", "8080"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2},
        }],
    }
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CLUSTER_NS}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": CLUSTER_APP, "namespace": CLUSTER_NS},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": CLUSTER_APP}},
                  "template": {"metadata": {"labels": {"app": CLUSTER_APP}}, "spec": pod}}},
    ]
    for fam in families:
        objs.append(lb_service(CLUSTER_APP if fam == 4 else CLUSTER_APP6, fam, {
            "lb.portico.dev/address-pool": L2_POOL if fam == 4 else L2_POOL6,
            "lb.portico.dev/loadBalancerIPs": CLUSTER_VIP if fam == 4 else CLUSTER_VIP6}))
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})


def lb_service(name: str, family: int, annotations: dict[str, str],
               lb_class: str | None = None) -> dict[str, Any]:
    """A LoadBalancer Service (ETP Cluster, port 80 -> the pods' http) in front of the bench's
    pods; SingleStack of ``family``."""
    spec: dict[str, Any] = {
        "type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
        "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4" if family == 4 else "IPv6"],
        "selector": {"app": CLUSTER_APP},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": CLUSTER_NS, "annotations": annotations},
            "spec": spec}


def syn_prober(lab: Lab, vip: str, family: int) -> SynProber:
    """TCP SYN to VIP:80 from the client's own address, ARP (4) or NDP (6) rounds."""
    if family == 6:
        return Syn6Prober(lab.client, "pl-eth0", vip, f"{SEG_A6}::{CLIENT_HOST:x}", 80)
    return SynProber(lab.client, "pl-eth0", vip, f"{SEG_A4}.{CLIENT_HOST}", 80)


@dataclass
class PodFaults:
    """The lab cluster's faults for one load balancer's speakers (``SpeakerPods``):

    * cut / cutall: the owner's segment-A cable (and management cable) at the switch;
    * kill: SIGKILL to the process group of the owner's speaker container (every process of
      it, as an OOM kill of the cgroup does); the node agent restarts the container per the
      pod's restartPolicy (Always), as a kubelet would;
    * term: the owner's speaker pod is deleted with its default grace period (the API call
      ``kubectl delete pod`` makes): the node agent sends the container SIGTERM (SIGKILL after
      the grace period) and the DaemonSet controller creates a new pod;
    * freeze: SIGSTOP to the container's process group, SIGCONT ``freeze_s`` later.

    ``undo`` ends the fault, bounded: the cable back; the restarted or recreated pod Running
    and Ready; SIGCONT (again, so that nothing is left stopped)."""

    lab: Lab
    pods: SpeakerPods
    freeze_s: float
    timers: list[threading.Timer] = field(default_factory=list)
    pid: int | None = None
    uid: str | None = None
    t_fault: float = 0.0
    # kill/term: fault -> the restore saw the pod Ready again (after the observe window)
    ready_s: list[float] = field(default_factory=list)

    def fault(self, scenario: str, owner: str) -> None:
        self.pid = self.uid = None
        self.t_fault = time.monotonic()
        if scenario in ("cut", "cutall"):
            self.lab.cut_link(owner, up=False, mgmt=scenario == "cutall")
        elif scenario == "kill":
            self.pid = self.pods.signal(owner, signal.SIGKILL)
        elif scenario == "term":
            self.uid = self.pods.delete(owner)
        elif scenario == "freeze":
            pid = self.pid = self.pods.signal(owner, signal.SIGSTOP)
            timer = threading.Timer(self.freeze_s, SpeakerPods.signal_group,
                                    (pid, signal.SIGCONT))
            self.timers.append(timer)
            timer.start()
        else:
            raise ValueError(f"unknown scenario {scenario}")

    def undo(self, scenario: str, owner: str) -> None:
        if scenario in ("cut", "cutall"):
            self.lab.cut_link(owner, up=True, mgmt=scenario == "cutall")
        elif scenario in ("kill", "term"):
            self.pods.wait_ready(owner, POD_READY_TIMEOUT_S, not_pid=self.pid,
                                 not_uid=self.uid)
            self.ready_s.append(round(time.monotonic() - self.t_fault, 2))
        elif scenario == "freeze":
            for timer in self.timers:
                timer.join(self.freeze_s + 5)
            self.timers.clear()
            if self.pid is not None:  # in case: never leave it stopped
                SpeakerPods.signal_group(self.pid, signal.SIGCONT)


def wait_vip_serving(lab: Lab, service: str, vip: str, who: str) -> None:
    """``service`` got ``vip`` and the client reaches the pods through it (HTTP)."""
    wait_until(lambda: lab.service_ips(service, CLUSTER_NS) == [vip], 60,
               what=f"{who}: VIP {vip} assigned")
    wait_until(lambda: lab.http_get(vip, timeout=1.0) is not None, 60,
               interval=0.5, what=f"{who}: {vip} answers HTTP from the client")


def cluster_setup(lc: Any, families: tuple[int, ...]) -> None:
    """The bench's namespace, backend pods and Portico's Services (one per family)."""
    lab = lc.lab
    lc.kubectl("apply", "-f", "-", input_text=cluster_manifest(families))
    lc.kubectl("rollout", "status", f"deployment/{CLUSTER_APP}", "-n", CLUSTER_NS,
               "--timeout=180s", timeout=200.0)
    for fam in families:
        name, vip = (CLUSTER_APP, CLUSTER_VIP) if fam == 4 else (CLUSTER_APP6, CLUSTER_VIP6)
        wait_vip_serving(lab, name, vip, "lab cluster")


def cluster_mode(lc: Any, family: int = 4, freeze_s: float = FREEZE_S) -> Mode:
    """The lab cluster (a started ``LabCluster``, ``cluster_setup`` done): the chart's
    speakers, kube-proxy, pods; one family's Service."""
    from lab.labcluster import NAMESPACE

    lab = lc.lab
    assert lab is not None
    vip = CLUSTER_VIP if family == 4 else CLUSTER_VIP6
    faults = PodFaults(lab, SpeakerPods(lc.cp.api, NAMESPACE), freeze_s)

    def restore(scenario: str, owner: str) -> None:
        faults.undo(scenario, owner)

    return Mode(f"lab-cluster-ipv{family}", lab, vip, syn_prober(lab, vip, family),
                "tcp-syn", faults.fault, restore, CLUSTER_SCENARIOS, family=family,
                observe={"kill": CLUSTER_POD_OBSERVE_S, "term": CLUSTER_POD_OBSERVE_S,
                         "freeze": freeze_s + AFTER_WAKE},
                info={"figures": dict(lc.figures), "pod_ready_seen_after_fault_s": faults.ready_s},
                settle=True)


def metallb_install(lc: Any, stack: contextlib.ExitStack,
                    families: tuple[int, ...]) -> dict[str, float]:
    """MetalLB on the lab cluster (``cluster_setup`` first): its release manifest with the
    lab's changes, L2 mode with memberlist, pools of its own (IPv4, IPv6) and a Service of its
    class per family (MetalLB's own annotation asks for the VIP) in front of the same backend
    pods."""
    from lab import metallb
    from lab.labcluster import CONTROL_PLANE_ROLE

    lab = lc.lab
    mlb = metallb.MetalLBInLab(lc, lb_class=METALLB_CLASS, ml_port=METALLB_ML_PORT)
    stack.callback(mlb.uninstall)
    mlb.install()
    pools = {METALLB_POOL: METALLB_RANGE} if 4 in families else {}
    if 6 in families:
        pools[METALLB_POOL6] = METALLB_RANGE6
    mlb.apply_pools(pools, {"matchExpressions": [
        {"key": CONTROL_PLANE_ROLE, "operator": "DoesNotExist"}]})
    for fam in families:
        name, vip = (METALLB_APP, METALLB_VIP) if fam == 4 else (METALLB_APP6, METALLB_VIP6)
        svc = lb_service(name, fam, {"metallb.io/loadBalancerIPs": vip}, METALLB_CLASS)
        lc.kubectl("apply", "-f", "-", input_text=json.dumps(svc))
        wait_vip_serving(lab, name, vip, "MetalLB")
    return dict(mlb.figures)


def metallb_mode(lc: Any, figures: dict[str, float], family: int = 4,
                 freeze_s: float = FREEZE_S) -> Mode:
    """MetalLB's Service of one family (``metallb_install`` first): the same prober, faults
    and trials as Portico's, interleaved. MetalLB's speaker is one process per pod: kill and
    freeze signal it as they signal Portico's speaker with its heartbeat child."""
    from lab import metallb

    lab = lc.lab
    assert lab is not None
    vip = METALLB_VIP if family == 4 else METALLB_VIP6
    faults = PodFaults(lab, SpeakerPods(lc.cp.api, metallb.NAMESPACE), freeze_s)
    heals: list[dict[str, Any]] = []

    def restore(scenario: str, owner: str) -> None:
        faults.undo(scenario, owner)
        owner_mac = lab.node(owner).mac_a
        t0 = time.monotonic()
        both = 0.0  # seconds during which two or more nodes answered ARP/NDP for the VIP
        last = t0
        got: set[str] = set()
        while time.monotonic() - t0 < METALLB_HEAL_TIMEOUT_S:
            got = lab.who_has(vip, timeout=0.2)
            now = time.monotonic()
            if len(got) > 1:
                both += now - last
            last = now
            if got == {owner_mac}:
                break
        heals.append({"scenario": scenario, "owner": owner,
                      "back_on_owner_s": round(time.monotonic() - t0, 2),
                      "two_answering_s": round(both, 2),
                      "answering_at_end": sorted(lab.node_by_mac(m) or m for m in got)})
        print(f"metallb-ipv{family} {scenario}: fault undone, VIP on {owner} again after "
              f"{heals[-1]['back_on_owner_s']} s; two nodes answered for "
              f"{heals[-1]['two_answering_s']} s of it", flush=True)

    window = {sc: METALLB_OBSERVE_S for sc in ("cut", "cutall", "kill", "term")}
    return Mode(f"metallb-lab-cluster-ipv{family}", lab, vip, syn_prober(lab, vip, family),
                "tcp-syn", faults.fault, restore, CLUSTER_SCENARIOS, family=family,
                observe={**window, "freeze": freeze_s + AFTER_WAKE},
                info={"peer": f"MetalLB {_metallb_version()} (L2, memberlist)",
                      "after_restore": heals, "pod_ready_seen_after_fault_s": faults.ready_s,
                      "metallb_lab_changes": list(metallb.LAB_CHANGES),
                      "figures": figures},
                settle=True, settle_timeout=METALLB_HEAL_TIMEOUT_S)


def _metallb_version() -> str:
    from lab.controlplane import binaries

    return binaries.METALLB_VERSION


RATIO_METRICS = (("outage", "outage"), ("gap", "arp_gap"), ("takeover", "takeover"))


def print_ratios(portico: Mode, peer: Mode) -> dict[str, Any]:
    """Per scenario both modes ran (one family): outage, ARP/NDP gap and takeover p50/p99/max
    of each, and peer/Portico; the overlap rounds of each beside them."""
    rows: dict[str, Any] = {}
    print(f"\n== {peer.name} / {portico.name} (IPv{portico.family}; same prober, trials "
          "interleaved)")
    print(f"{'scenario':9} {'metric':9} {'Portico p50/p99/max ms':>23} "
          f"{'MetalLB p50/p99/max ms':>23} {'ratio p50/p99/max':>19}")
    for sc in portico.results:
        a, b = portico.results.get(sc) or [], peer.results.get(sc) or []
        if not a or not b:
            continue
        for label, attr in RATIO_METRICS:
            xa = [v * 1000 for t in a if (v := getattr(t, attr)) is not None]
            xb = [v * 1000 for t in b if (v := getattr(t, attr)) is not None]
            if not xa or not xb:  # e.g. no takeover at all: MetalLB's restarted pod kept it
                cells = [f"{pct(x, 50):9.0f}/{pct(x, 99):6.0f}/{max(x):6.0f}" if x
                         else f"{'(none)':>23}" for x in (xa, xb)]
                print(f"{sc:9} {label:9} {cells[0]} {cells[1]} {'-':>19}")
                rows.setdefault(sc, {})[label] = {
                    "portico_ms": (pct(xa, 50), pct(xa, 99), max(xa)) if xa else None,
                    "peer_ms": (pct(xb, 50), pct(xb, 99), max(xb)) if xb else None,
                    "ratio": None, "n": (len(xa), len(xb))}
                continue
            pa = (pct(xa, 50), pct(xa, 99), max(xa))
            pb = (pct(xb, 50), pct(xb, 99), max(xb))
            ratio = tuple(round(y / x, 2) if x else None for x, y in zip(pa, pb, strict=True))
            rows.setdefault(sc, {})[label] = {"portico_ms": pa, "peer_ms": pb, "ratio": ratio,
                                              "n": (len(xa), len(xb))}
            print(f"{sc:9} {label:9} {pa[0]:9.0f}/{pa[1]:6.0f}/{pa[2]:6.0f} "
                  f"{pb[0]:9.0f}/{pb[1]:6.0f}/{pb[2]:6.0f} "
                  f"{'/'.join(str(r) if r is not None else '-' for r in ratio):>19}")
        oa = sum(t.overlap_rounds for t in a)
        ob = sum(t.overlap_rounds for t in b)
        rows[sc]["overlap_rounds"] = {"portico": oa, "peer": ob,
                                      "portico_trials": sum(1 for t in a if t.overlap_rounds),
                                      "peer_trials": sum(1 for t in b if t.overlap_rounds)}
        print(f"{sc:9} {'overlap':9} {oa:9} rounds ({rows[sc]['overlap_rounds']['portico_trials']}"
              f"/{len(a)} trials)  {ob:9} rounds ({rows[sc]['overlap_rounds']['peer_trials']}"
              f"/{len(b)} trials)")
    print("ratio: MetalLB / Portico (above 1: MetalLB slower); '-': Portico's figure is 0 "
          "or a side had none (takeover: no other node took the VIP in the window)")
    return rows


# ---- soak: no fault, CPU hogs and memory churn at a higher priority than the speakers -------

def soak(modes: list[Mode], seconds: float, hogs: bool, mem_mb: int) -> dict[str, Any]:
    """No fault for ``seconds``; what moved meanwhile (see the module docstring)."""
    lab = modes[0].lab
    owners = {m.name: current_owner(lab, m.vip)[1] for m in modes}
    base = {e: log_events(lab, e, e == "l2_ownership")
            for e in ("l2_ownership", "liveness_change", "liveness_stall")}
    per_mode = {m.name: {"rounds": 0, "foreign_rounds": 0, "overlap_rounds": 0, "moves": 0,
                         "longest_gap_ms": 0.0, "probes": 0, "lost": 0} for m in modes}
    procs: list[subprocess.Popen[bytes]] = []
    t0 = time.monotonic()
    try:
        if hogs:
            procs = start_hogs(seconds + HOG_GRACE, mem_mb)
        for m in modes:
            m.prober.reset()
        while (left := t0 + seconds - time.monotonic()) > 0:
            time.sleep(min(SOAK_CHUNK, left))
            for m in modes:
                rec = m.prober.reset()
                by_round: dict[int, set[str]] = {}
                for _, rnd, mac in rec.arp_replies:
                    by_round.setdefault(rnd, set()).add(mac)
                n = max(0, len(rec.arp_rounds) - 5)  # the last rounds may still be in flight
                overlaps, moves, _ = count_overlaps(by_round, n, owners[m.name], rec, 0.0, None)
                st = per_mode[m.name]
                st["rounds"] += n
                st["overlap_rounds"] += overlaps
                st["moves"] += moves
                st["foreign_rounds"] += sum(1 for r in range(n)
                                            if by_round.get(r, set()) - {owners[m.name]})
                gap = best = 0
                for r in range(n):
                    gap = 0 if by_round.get(r) else gap + 1
                    best = max(best, gap)
                st["longest_gap_ms"] = max(st["longest_gap_ms"], best * INTERVAL * 1000)
                got = {q for _, q, _ in rec.replies}
                sent = [q for q, t in rec.sent.items() if t <= max(rec.sent.values()) - 0.2] \
                    if rec.sent else []
                st["probes"] += len(sent)
                st["lost"] += sum(1 for q in sent if q not in got)
            print(f"soak {time.monotonic() - t0:5.0f} s: "
                  + "  ".join(f"{k}: foreign rounds {v['foreign_rounds']}, overlaps "
                              f"{v['overlap_rounds']}" for k, v in per_mode.items()),
                  flush=True)
    finally:
        stop_hogs(procs)
    counts = {e: log_events(lab, e, e == "l2_ownership") - base[e] for e in base}
    return {"seconds": round(time.monotonic() - t0, 1), "hogs": hogs,
            "hog_procs": len(procs), "mem_mb": mem_mb if hogs else 0,
            "takeovers": counts["l2_ownership"], "live_set_changes": counts["liveness_change"],
            "heartbeat_stalls": counts["liveness_stall"], "per_family": per_mode}


def print_soak(result: dict[str, Any]) -> bool:
    hogs = (f"{result['hog_procs']} processes at nice -10 (one per core + memory churn "
            f"{result['mem_mb']} MiB)" if result["hogs"] else "none")
    print(f"\n== soak {result['seconds']:.0f} s, hogs: {hogs}")
    print(f"takeovers (VIP gained by any speaker): {result['takeovers']}   live-set changes: "
          f"{result['live_set_changes']}   heartbeat-process stalls seen: "
          f"{result['heartbeat_stalls']}")
    print(f"{'family':10} {'rounds':>8} {'foreign':>8} {'overlap':>8} {'moves':>6} "
          f"{'longest gap':>12} {'lost/probes':>14}")
    for name, st in result["per_family"].items():
        print(f"{name:10} {st['rounds']:8} {st['foreign_rounds']:8} {st['overlap_rounds']:8} "
              f"{st['moves']:6} {st['longest_gap_ms']:9.0f} ms {st['lost']:6}/{st['probes']}")
    return bool(result["takeovers"] == 0 and all(
        st["foreign_rounds"] == 0 and st["overlap_rounds"] == 0
        for st in result["per_family"].values()))


def cluster_cleanup(lc: Any) -> None:
    for name in (METALLB_APP, METALLB_APP6):
        with contextlib.suppress(Exception):
            lc.kubectl("delete", "service", name, "-n", CLUSTER_NS, "--ignore-not-found",
                       check=False)
    with contextlib.suppress(Exception):
        lc.kubectl("delete", "service", CLUSTER_APP6, "-n", CLUSTER_NS, "--ignore-not-found",
                   check=False)
    with contextlib.suppress(Exception):
        lc.kubectl("delete", "service", CLUSTER_APP, "-n", CLUSTER_NS, "--ignore-not-found",
                   check=False)
        lc.kubectl("delete", "namespace", CLUSTER_NS, "--ignore-not-found", "--wait=false",
                   check=False)


def timeline_png(trial: Trial, lab: Lab, path: Path, data_label: str = "ICMP echo reply",
                 mode: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6))
    names = sorted({lab.node_by_mac(m) or m for _, _, m in trial.record.replies}
                   | {lab.node_by_mac(m) or m for _, _, m in trial.record.arp_replies})
    ypos = {n: i for i, n in enumerate(names)}
    ctl = "NDP reply" if "ipv6" in mode else "ARP reply"
    for kind, rows, marker, dy in ((data_label, trial.record.replies, "|", 0.1),
                                   (ctl, trial.record.arp_replies, ".", -0.1)):
        xs = [t - trial.t_fault for t, _, _ in rows]
        ys = [ypos[lab.node_by_mac(m) or m] + dy for _, _, m in rows]
        ax.scatter(xs, ys, marker=marker, s=30, label=kind)
    lost_x = [t - trial.t_fault for s, t in trial.record.sent.items()
              if s not in {q for _, q, _ in trial.record.replies}]
    if lost_x:
        ax.scatter(lost_x, [-0.8] * len(lost_x), marker="x", color="red", s=12,
                   label="lost probe")
    ax.axvline(0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks([*ypos.values(), -0.8], [*ypos, "lost"])
    ax.set_xlabel(f"seconds since fault ({trial.scenario}: owner {trial.owner})")
    who = "MetalLB" if mode.startswith("metallb") else "Portico"
    ax.set_title(f"{who} L2 failover{' (' + mode + ')' if mode else ''}, 100 Hz "
                 f"probes per node MAC — scenario "
                 f"{trial.scenario}: outage {trial.outage * 1000:.0f} ms, "
                 f"takeover {(trial.takeover or float('nan')) * 1000:.0f} ms", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(mode: Mode) -> bool:
    """The table for one mode (one family of one lab); True when the targets are met."""
    results = mode.results
    print(f"\n== mode {mode.name} (data path: {mode.probe})")
    print(f"{'scenario':9} {'fam':>4} {'n':>3} {'outage p50/p99/max ms':>22} {'lost max':>8} "
          f"{'gap p50/p99/max ms':>19} {'takeover p50/p99/max ms':>24} "
          f"{'overlap rounds':>15} {'moves max':>9} {'late':>5}")
    ok = True
    fam = f"v{mode.family}"
    for sc, trials in results.items():
        if not trials:
            continue
        out = [t.outage * 1000 for t in trials]
        gap = [t.arp_gap * 1000 for t in trials]
        tk = [t.takeover * 1000 for t in trials if t.takeover is not None]
        overlap = sum(t.overlap_rounds for t in trials)
        overlap_trials = sum(1 for t in trials if t.overlap_rounds)
        late = sum(t.late_answers for t in trials)
        print(f"{sc:9} {fam:>4} {len(trials):3} "
              f"{pct(out, 50):7.0f}/{pct(out, 99):5.0f}/{max(out):5.0f}    "
              f"{max(t.lost for t in trials):8} "
              f"{pct(gap, 50):6.0f}/{pct(gap, 99):5.0f}/{max(gap):5.0f}  "
              f"{pct(tk, 50):9.0f}/{pct(tk, 99):5.0f}/{max(tk, default=float('nan')):5.0f}   "
              f"{overlap:5} ({overlap_trials}/{len(trials)}) "
              f"{max(t.moves for t in trials):9} {late:5}")
        if sc == "cut" and pct(out, 99) >= TARGET_CUT_P99_MS:
            ok = False
        if sc in ("kill", "cutall", "freeze") and pct(out, 99) >= 1000:
            ok = False
        if sc == "term" and max(t.lost for t in trials) > 0:
            ok = False
        if sc == "freeze" and (late or max(t.moves for t in trials) > 1):
            ok = False
        if sc != "term" and overlap:
            ok = False
    print("overlap: a probe round answered by two or more MACs (every such round counts); "
          "moves: changes of the answering MAC in one trial; late: answers of the faulted "
          "owner to rounds sent after the takeover")
    return ok


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def write_results(mode: Mode, args: argparse.Namespace, stamp: str, out_dir: Path) -> Path:
    """bench/results/l2_failover-<mode>-<stamp>.json (+ .png of the worst trial)."""
    stats: dict[str, Any] = {}
    for sc, trials in mode.results.items():
        if not trials:
            continue
        out = [t.outage * 1000 for t in trials]
        gap = [t.arp_gap * 1000 for t in trials]
        tk = [t.takeover * 1000 for t in trials if t.takeover is not None]
        stats[sc] = {"n": len(trials),
                     "outage_ms": {"p50": pct(out, 50), "p99": pct(out, 99), "max": max(out)},
                     "lost_max": max(t.lost for t in trials),
                     "arp_gap_ms": {"p50": pct(gap, 50), "p99": pct(gap, 99), "max": max(gap)},
                     "takeover_ms": {"p50": pct(tk, 50) if tk else None,
                                     "p99": pct(tk, 99) if tk else None,
                                     "max": max(tk, default=None)},
                     "overlap_rounds": sum(t.overlap_rounds for t in trials),
                     "overlap_trials": sum(1 for t in trials if t.overlap_rounds),
                     "moves_max": max(t.moves for t in trials),
                     "late_answers": sum(t.late_answers for t in trials)}
    doc = {
        "bench": "l2_failover", "mode": mode.name, "family": mode.family, "started": stamp,
        "argv": sys.argv[1:], "vip": mode.vip, "probe": mode.probe,
        "probe_interval_ms": 10, "settle_s": SETTLE, "observe_s": OBSERVE,
        "interleaved": bool(args.compare or args.metallb or "," in args.families),
        "observe_per_scenario_s": mode.observe, **mode.info,
        "summary": stats,
        "trials": [{"scenario": t.scenario, "owner": t.owner, "new_owner": t.new_owner,
                    "lost": t.lost, "outage_ms": ms(t.outage), "arp_gap_ms": ms(t.arp_gap),
                    "takeover_ms": ms(t.takeover), "split_rounds": t.split_rounds,
                    "overlap_rounds": t.overlap_rounds, "moves": t.moves,
                    "late_answers": t.late_answers}
                   for ts in mode.results.values() for t in ts],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"l2_failover-{mode.name}-{stamp}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.l2_failover")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--scenarios", default=None,
                    help="default: kill,cut,term,freeze (lab), cut (lab cluster); the lab "
                         "cluster knows cut, cutall (segment A and management cables), kill, "
                         "term (pod deleted) and freeze (the speaker container's processes)")
    ap.add_argument("--lab-cluster", action="store_true",
                    help="run on the lab cluster (chart-installed speakers) instead")
    ap.add_argument("--metallb", action="store_true",
                    help="lab cluster: also MetalLB (built from its Go module) on the same "
                         "cluster, with its own class, pool and VIP; its trials interleaved "
                         "with Portico's, and the ratio printed")
    ap.add_argument("--compare", action="store_true",
                    help="both labs, trials interleaved (lab, lab cluster, lab, ...)")
    ap.add_argument("--lab-probe", choices=("icmp", "syn"), default="icmp",
                    help="data path of today's lab: ICMP echo (today's) or TCP SYN to :80 "
                         "(what the lab cluster uses)")
    ap.add_argument("--max-minutes", type=float, default=60.0,
                    help="no new trial starts after this long (bounded run)")
    ap.add_argument("--png", default=None,
                    help="timeline PNG (one mode only; default: next to the results file)")
    ap.add_argument("--png-scenario", default="cut")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument("--families", default="4",
                    help="4, 6 or 4,6 (IPv4 ARP / IPv6 NDP VIPs; default 4), in both labs")
    ap.add_argument("--freeze-seconds", type=float, default=FREEZE_S,
                    help="scenario freeze: how long the owner's speaker stays stopped")
    ap.add_argument("--soak-seconds", type=float, default=0.0,
                    help="instead of trials: this long without any fault (at most 3600), "
                         "counting takeovers (must be 0)")
    ap.add_argument("--hogs", action="store_true",
                    help="soak: CPU hogs (one per core) and a memory churner at nice -10")
    ap.add_argument("--liveness-in-process", action="store_true",
                    help="control run: speakers keep their heartbeats in-process (no real-time "
                         "heartbeat process), to see what the hogs do to them")
    ap.add_argument("--hog-mem-mb", type=int, default=1024,
                    help="soak --hogs: memory the churner holds at most (MiB; 0: none)")
    args = ap.parse_args(argv)
    if args.trials < 1 or args.trials > 200:  # bounded load loop
        ap.error("--trials must be 1..200")
    if not 0 <= args.soak_seconds <= 3600 or not 0 <= args.hog_mem_mb <= 8192:
        ap.error("--soak-seconds must be 0..3600 and --hog-mem-mb 0..8192")
    if not 0 < args.freeze_seconds <= 30:
        ap.error("--freeze-seconds must be in (0, 30]")
    families = sorted({int(f) for f in args.families.split(",") if f})
    if not families or not set(families) <= {4, 6}:
        ap.error("--families: 4, 6 or 4,6")
    if args.soak_seconds and (args.lab_cluster or args.compare):
        ap.error("--soak-seconds runs on today's lab only")
    if args.lab_cluster and args.compare:
        ap.error("--compare already runs the lab cluster")
    if args.metallb and not (args.lab_cluster or args.compare):
        ap.error("--metallb runs on the lab cluster: add --lab-cluster")
    want = ((["lab"] if not args.lab_cluster else []) +
            (["lab-cluster"] if args.lab_cluster or args.compare else []))
    scenarios = [s for s in (args.scenarios or (
        "cut" if args.lab_cluster or args.compare else "kill,cut,term,freeze")).split(",")
                 if s]
    if "lab-cluster" in want and not set(scenarios) & set(CLUSTER_SCENARIOS):
        ap.error(f"the lab cluster runs scenarios {', '.join(CLUSTER_SCENARIOS)} only")
    reason = netns.available()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    deadline = time.monotonic() + args.max_minutes * 60
    ok = True
    with contextlib.ExitStack() as stack:
        modes: list[Mode] = []
        if "lab" in want:
            lab = stack.enter_context(Lab(nodes_count=3, speaker_args=tuple(
                ["--liveness-in-process"] if args.liveness_in_process else [])))
            lab_setup(lab)
            for fam in families:
                modes.append(lab_mode(lab, args.lab_probe, fam, args.freeze_seconds,
                                      realtime_probe=bool(args.soak_seconds)))
        if "lab-cluster" in want:
            from lab.labcluster import LabCluster

            t0 = time.monotonic()
            lc = stack.enter_context(LabCluster())
            stack.callback(cluster_cleanup, lc)
            print(f"lab cluster up in {time.monotonic() - t0:.0f} s: {lc.figures}",
                  file=sys.stderr, flush=True)
            cluster_setup(lc, tuple(families))
            for fam in families:
                modes.append(cluster_mode(lc, fam, args.freeze_seconds))
            if args.metallb:
                figures = metallb_install(lc, stack, tuple(families))
                for fam in families:
                    modes.append(metallb_mode(lc, figures, fam, args.freeze_seconds))
        for mode in modes:
            mode.results = {s: [] for s in scenarios if s in mode.scenarios}
            mode.prober.start()
            stack.callback(mode.prober.stop)
            stack.callback(print, f"{mode.name} lab logs: {mode.lab.dir}", file=sys.stderr)
        if args.soak_seconds:
            result = soak(modes, args.soak_seconds, args.hogs, args.hog_mem_mb)
            ok = print_soak(result)
            args.out.mkdir(parents=True, exist_ok=True)
            path = args.out / f"l2_failover-soak-{stamp}.json"
            path.write_text(json.dumps({"bench": "l2_failover", "mode": "soak",
                                        "started": stamp, "argv": sys.argv[1:], **result},
                                       indent=1) + "\n")
            print(f"results: {path}")
            print("targets met" if ok else "TARGETS MISSED")
            return 0 if ok else 1
        try:
            for sc in scenarios:
                for i in range(args.trials):
                    for mode in modes:
                        if sc not in mode.scenarios:
                            continue
                        if time.monotonic() > deadline:
                            raise TimeoutError
                        tr = run_mode_trial(mode, sc)
                        mode.results[sc].append(tr)
                        tag = f"{mode.name:24} " if len(modes) > 1 else ""
                        print(f"{tag}{sc:6} #{i + 1:2}: owner {tr.owner} -> {tr.new_owner}  "
                              f"lost {tr.lost:3}  outage {tr.outage * 1000:6.0f} ms  "
                              f"gap {tr.arp_gap * 1000:5.0f} ms  takeover "
                              f"{(tr.takeover or float('nan')) * 1000:6.0f} ms  "
                              f"overlap {tr.overlap_rounds}  moves {tr.moves}  "
                              f"late {tr.late_answers}", flush=True)
        except TimeoutError:
            print(f"--max-minutes {args.max_minutes:g} reached: no more trials", flush=True)
        for mode in modes:
            met = summary(mode)
            # Portico's targets: a peer measured beside it (MetalLB) is reported, not judged.
            ok = (met or mode.name.startswith("metallb")) and ok
            path = write_results(mode, args, stamp, args.out)
            print(f"results: {path}")
            pick = mode.results.get(args.png_scenario) or next(
                (ts for ts in mode.results.values() if ts), [])
            if pick:
                worst = max(pick, key=lambda t: t.outage)
                png = (Path(args.png) if args.png and len(modes) == 1
                       else path.with_suffix(".png"))
                timeline_png(worst, mode.lab, png,
                             "TCP SYN-ACK" if mode.probe == "tcp-syn" else "ICMP echo reply",
                             mode.name)
                print(f"timeline of one {worst.scenario} trial (worst outage): {png}")
        by_name = {m.name: m for m in modes}
        ratios: dict[str, Any] = {}
        for fam in families:
            a = by_name.get(f"lab-cluster-ipv{fam}")
            b = by_name.get(f"metallb-lab-cluster-ipv{fam}")
            if a is not None and b is not None:
                ratios[f"ipv{fam}"] = print_ratios(a, b)
        if ratios:
            path = args.out / f"l2_failover-ratio-metallb-{stamp}.json"
            path.write_text(json.dumps({"bench": "l2_failover", "started": stamp,
                                        "argv": sys.argv[1:], "ratios": ratios},
                                       indent=1) + "\n")
            print(f"results: {path}")
        print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
