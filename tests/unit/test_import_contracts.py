"""The import contracts (``.importlinter``) hold on the tree, and each one catches a deliberate
violation: a copy of the tree gets one breach per contract, and lint-imports must name every
broken contract and every breaching line (relative, function-level and by-name imports too).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("portico", "common", "lb", "speaker", "ingress", "lab", "bench", "tests")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{root / 'scripts'}")
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache",
         str(root / ".importlinter")],
        cwd=root, env=env, capture_output=True, text=True, timeout=120)


def statuses(out: str) -> dict[str, str]:
    return dict((m.group(1), m.group(2))
                for m in re.finditer(r"^(.+?) (KEPT|BROKEN)$", out, re.M))


def test_tree_keeps_every_contract() -> None:
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = statuses(proc.stdout)
    assert len(found) == 6 and set(found.values()) == {"KEPT"}, proc.stdout


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text + "\n")


def test_each_contract_catches_a_deliberate_violation(tmp_path: Path) -> None:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "golden", "*.png"))
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    t = tmp_path
    # layers: the kernel reaching up into a component.
    _append(t / "common/kube/events.py", "from speaker import l2 as _l2  # breach")
    # components: one component importing another.
    _append(t / "lb/controller.py", "import ingress.haproxy  # breach")
    # product -> lab / lab -> tests.
    _append(t / "lb/controller_main.py", "import lab.netns  # breach")
    _append(t / "bench/procstat.py", "import tests.conftest  # breach")
    # a by-name import in product code.
    _append(t / "ingress/main.py",
            "import importlib\n_m = importlib.import_module('speaker.l2')  # breach")
    # pure cores: a relative import of an adapter module, a function-level I/O import and
    # an import of the shared kernel's adapter package; and __import__ in a pure core.
    _append(t / "speaker/core/l2_plan.py", "from ..l2 import Responder as _R  # breach")
    _append(t / "lb/core/allocator.py", "def _breach() -> None:\n    import socket  # breach")
    _append(t / "common/api/model.py", "from common.kube import client as _c  # breach")
    _append(t / "ingress/core/render.py", "_os = __import__('os')  # breach")

    proc = lint(t)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    found = statuses(proc.stdout)
    assert len(found) == 6 and set(found.values()) == {"BROKEN"}, out
    for breach in ("common.kube.events -> speaker", "lb.controller -> ingress.haproxy",
                   "lb.controller_main -> lab.netns", "bench.procstat -> tests.conftest",
                   "ingress.main:", "imports by name at run time (import_module)",
                   "speaker.core.l2_plan:", "imports speaker.l2",
                   "lb.core.allocator:", "imports socket", "common.api.model:",
                   "imports common.kube.client", "ingress.core.render:",
                   "imports by name at run time (__import__)"):
        assert breach in out, f"{breach!r} not reported:\n{out}"
