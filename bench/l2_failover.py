"""Layer-2 failover as a client sees it: outage per scenario over many trials.

    sudo .venv/bin/python -m bench.l2_failover [--trials 20] [--png PATH]

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
after each trial the speaker is restarted / the cable re-plugged and the VIP returns.

Printed per scenario: lost probes and data-path outage (longest run of lost echo replies x
10 ms) as p50/p99/max; "arp gap" (longest time no MAC answered ARP for the VIP); takeover
time (fault -> first ARP answer from the new owner); split-brain rounds (more than one MAC
answering one ARP round; a run longer than one probe interval counts as split brain).
Targets: (a), (b) p99 outage < 1 s; (c) zero lost probes; no split brain anywhere.
Note (a): the killed speaker's node still delivers traffic sent to its MAC, so the data path
often loses nothing; the ARP gap shows the takeover itself.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from lab import netns
from lab.failover import Prober, Trial, analyse, current_owner
from lab.topology import Lab
from lab.wait import wait_until

VIP = "192.0.2.210"
SETTLE = 0.6  # s of steady probing before a fault
OBSERVE = 3.0  # s after the fault that a trial records


def run_trial(lab: Lab, prober: Prober, scenario: str) -> Trial:
    owner, owner_mac = current_owner(lab, VIP)
    time.sleep(SETTLE)
    prober.reset()
    time.sleep(SETTLE)
    t_fault = time.monotonic()
    if scenario == "kill":
        lab.stop_proc(f"speaker-{owner}", signal.SIGKILL)
    elif scenario == "cut":
        lab.cut_link(owner)
    elif scenario == "term":
        threading.Thread(target=lab.stop_proc, args=(f"speaker-{owner}", signal.SIGTERM),
                         daemon=True).start()
    time.sleep(OBSERVE)
    rec = prober.reset()
    trial = analyse(scenario, owner, owner_mac, rec, t_fault, lab)
    # Restore, and wait until the VIP is back with its hash winner (the restarted node).
    if scenario == "cut":
        lab.cut_link(owner, up=True)
    else:
        lab.stop_proc(f"speaker-{owner}", signal.SIGKILL, wait=5)
        lab.start_speaker(owner)
    wait_until(lambda: lab.who_has(VIP, timeout=0.2) == {owner_mac}, 20,
               what="VIP back on the original owner")
    return trial


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def timeline_png(trial: Trial, lab: Lab, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6))
    names = sorted({lab.node_by_mac(m) or m for _, _, m in trial.record.replies}
                   | {lab.node_by_mac(m) or m for _, _, m in trial.record.arp_replies})
    ypos = {n: i for i, n in enumerate(names)}
    for kind, rows, marker, dy in (("ICMP echo reply", trial.record.replies, "|", 0.1),
                                   ("ARP reply", trial.record.arp_replies, ".", -0.1)):
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
    ax.set_title(f"Portico L2 failover, 100 Hz probes per node MAC — scenario "
                 f"{trial.scenario}: outage {trial.outage * 1000:.0f} ms, "
                 f"takeover {(trial.takeover or float('nan')) * 1000:.0f} ms")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.l2_failover")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--scenarios", default="kill,cut,term")
    ap.add_argument("--png", default="/tmp/portico-bench/l2_failover_timeline.png")
    ap.add_argument("--png-scenario", default="cut")
    args = ap.parse_args(argv)
    if args.trials < 1 or args.trials > 200:  # bounded load loop
        ap.error("--trials must be 1..200")
    reason = netns.available()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 2
    scenarios = [s for s in args.scenarios.split(",") if s]
    results: dict[str, list[Trial]] = {s: [] for s in scenarios}
    with Lab(nodes_count=3) as lab:
        lab.add_pool("a4", ["192.0.2.192/27"])
        lab.add_l2("seg-a", ipAddressPools=["a4"])
        lab.start_speakers()
        lab.wait_speakers_live()
        lab.add_service("bench", ips=[VIP])
        wait_until(lambda: lab.service_ips("bench") == [VIP], 20, what="VIP assigned")
        current_owner(lab, VIP)
        prober = Prober(lab.client, "pl-eth0", VIP)
        prober.start()
        try:
            for sc in scenarios:
                for i in range(args.trials):
                    tr = run_trial(lab, prober, sc)
                    results[sc].append(tr)
                    print(f"{sc:5} #{i + 1:2}: owner {tr.owner} -> {tr.new_owner}  "
                          f"lost {tr.lost:3}  outage {tr.outage * 1000:6.0f} ms  "
                          f"arp gap {tr.arp_gap * 1000:5.0f} ms  takeover "
                          f"{(tr.takeover or float('nan')) * 1000:6.0f} ms  "
                          f"split {tr.split_rounds}", flush=True)
        finally:
            prober.stop()
            print(f"lab logs: {lab.dir}", file=sys.stderr)
        print()
        print(f"{'scenario':10} {'n':>3} {'outage p50/p99/max (ms)':>26} {'lost max':>9} "
              f"{'arp gap p50/p99/max (ms)':>26} {'takeover p50/p99/max (ms)':>27} "
              f"{'split brain':>11}")
        ok = True
        for sc, trials in results.items():
            if not trials:
                continue
            out = [t.outage * 1000 for t in trials]
            gap = [t.arp_gap * 1000 for t in trials]
            tk = [t.takeover * 1000 for t in trials if t.takeover is not None]
            split = sum(1 for t in trials if t.split_rounds > 1)
            print(f"{sc:10} {len(trials):3} "
                  f"{pct(out, 50):8.0f}/{pct(out, 99):6.0f}/{max(out):6.0f}     "
                  f"{max(t.lost for t in trials):9} "
                  f"{pct(gap, 50):8.0f}/{pct(gap, 99):6.0f}/{max(gap):6.0f}     "
                  f"{pct(tk, 50):9.0f}/{pct(tk, 99):6.0f}/{max(tk, default=float('nan')):6.0f}"
                  f"     {split:>6} of {len(trials)}")
            if sc in ("kill", "cut") and pct(out, 99) >= 1000:
                ok = False
            if sc == "term" and max(t.lost for t in trials) > 0:
                ok = False
            if split:
                ok = False
        print("split brain: two MACs answering one ARP round for longer than one probe "
              "interval (10 ms) —", "never" if all(
                  t.split_rounds <= 1 for ts in results.values() for t in ts) else "SEEN")
        pick = results.get(args.png_scenario) or next(iter(results.values()))
        if pick:
            worst = max(pick, key=lambda t: t.outage)
            timeline_png(worst, lab, Path(args.png))
            print(f"timeline of one {worst.scenario} trial (worst outage): {args.png}")
        print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
