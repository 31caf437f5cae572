"""The pure cores (``*/core/``) must not import I/O libraries (DESIGN.md, "Layout").

An AST check rather than a runtime one: it sees imports inside functions too, and it fails
with the module and line that broke the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_PACKAGES = ["lb/core", "speaker/core", "ingress/core"]
FORBIDDEN = {
    "kubernetes", "scapy", "socket", "subprocess", "exabgp", "urllib3", "requests",
    "http", "asyncio", "threading", "selectors", "ssl", "os", "shutil", "signal",
    "multiprocessing", "structlog", "prometheus_client", "common.kube", "time",
}


def _pure_modules() -> list[Path]:
    return sorted(p for pkg in PURE_PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_no_io(path: Path) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for name, line in _imports(ast.parse(path.read_text()))
        if _forbidden(name)
    ]
    assert not bad, "pure core imports I/O: " + ", ".join(bad)


def test_checker_catches_forbidden_import() -> None:
    tree = ast.parse("import os\nfrom scapy.all import ARP\nimport ipaddress\n")
    assert [n for n, _ in _imports(tree) if _forbidden(n)] == ["os", "scapy.all"]
