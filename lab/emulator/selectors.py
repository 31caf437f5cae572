"""Label and field selector strings as the API server accepts them in list/watch queries."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Pred = Callable[[dict[str, Any]], bool]


class SelectorError(ValueError):
    pass


def _split_top(s: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return [p for p in parts if p]


_SET = re.compile(r"^([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)$")
_CMP = re.compile(r"^([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_./-]*)$")
_KEY = re.compile(r"^(!?)\s*([A-Za-z0-9_./-]+)$")


def label_selector(expr: str | None) -> Callable[[Mapping[str, str]], bool]:
    if not expr:
        return lambda labels: True
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for part in _split_top(expr):
        if m := _SET.match(part):
            key, op = m.group(1), m.group(2)
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                tests.append(lambda lb, k=key, vs=values: lb.get(k) in vs)  # type: ignore[misc]
            else:
                tests.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)  # type: ignore[misc]
        elif m := _CMP.match(part):
            key, op, val = m.groups()
            if op == "!=":
                tests.append(lambda lb, k=key, v=val: lb.get(k) != v)  # type: ignore[misc]
            else:
                tests.append(lambda lb, k=key, v=val: lb.get(k) == v)  # type: ignore[misc]
        elif m := _KEY.match(part):
            neg, key = m.groups()
            if neg:
                tests.append(lambda lb, k=key: k not in lb)  # type: ignore[misc]
            else:
                tests.append(lambda lb, k=key: k in lb)  # type: ignore[misc]
        else:
            raise SelectorError(f"unable to parse label selector requirement {part!r}")
    return lambda labels: all(t(labels) for t in tests)


def _lookup(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for seg in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(seg)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def field_selector(expr: str | None) -> Pred:
    if not expr:
        return lambda obj: True
    tests: list[Pred] = []
    for part in _split_top(expr):
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"unable to parse field selector requirement {part!r}")
        path, op, val = m.group(1), m.group(2), m.group(3).strip()
        if op == "!=":
            tests.append(lambda o, p=path, v=val: _lookup(o, p) != v)  # type: ignore[misc]
        else:
            tests.append(lambda o, p=path, v=val: _lookup(o, p) == v)  # type: ignore[misc]
    return lambda obj: all(t(obj) for t in tests)


def object_matcher(
    namespace: str | None, labels: str | None, fields: str | None
) -> Pred:
    lsel = label_selector(labels)
    fsel = field_selector(fields)

    def match(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if namespace and meta.get("namespace") != namespace:
            return False
        return lsel(meta.get("labels") or {}) and fsel(obj)

    return match
