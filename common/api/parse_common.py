"""Shared machinery of the parsers: problem collection, typed field access, names, selectors.

See ``common.api.parse`` for the convention (collect every problem, then raise InvalidObject).
Everything here reads untrusted dicts: every access checks the type first, nothing assumes a
key exists, and no input can raise anything but :class:`common.errors.InvalidObject`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import NoReturn

from common.api.model import (
    FieldProblem,
    IPAddress,
    LabelSelector,
    ObjectRef,
    Requirement,
    SelectorOperator,
)
from common.errors import InvalidObject

# --- limits: the CRDs declare the same numbers (tests/unit/test_crds.py checks they agree) ---
# They bound the API server's CEL cost estimate and keep one object from costing the
# controller more than a few milliseconds.
MAX_POOL_ADDRESSES = 128
MAX_NAMES = 64  # pool / peer / namespace name lists
MAX_SELECTORS = 16  # selector lists
MAX_EXPRESSIONS = 16  # matchExpressions per selector
MAX_SELECTOR_VALUES = 64  # values per matchExpression
MAX_MATCH_LABELS = 64
MAX_INTERFACES = 32
MAX_COMMUNITIES = 32
MAX_SERVICE_PORTS = 256  # well above anything real; the API server has no limit of its own
MAX_ADDRESS_TEXT = 100  # longest IPv6 range with spaces is ~85 characters
MAX_IP_TEXT = 45  # longest textual IPv6 address (with an embedded IPv4 tail)
MAX_ANNOTATION_LEN = 1024

UINT32_MAX = 2**32 - 1  # ASNs (RFC 6793), LOCAL_PREF, large-community parts (RFC 8092)
UINT16_MAX = 2**16 - 1  # ports, standard-community halves (RFC 1997), hold time (RFC 4271)
INT32_MAX = 2**31 - 1  # the CRD declares priority as int32

# RFC 1123 names as the API server checks them for object names and namespaces.
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
# Label keys: optional DNS subdomain prefix, '/', and a name of at most 63 characters.
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

OPERATORS: tuple[SelectorOperator, ...] = ("In", "NotIn", "Exists", "DoesNotExist")


def short(value: object, limit: int = 60) -> str:
    """A value for an error message: repr'd (so CR/LF/NUL show as escapes) and cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, Sequence):
        return "array"
    return type(value).__name__


def _ref_from(kind: str, obj: object, namespaced: bool) -> ObjectRef:
    name, namespace = "?", None
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if isinstance(meta, Mapping):
        raw_name = meta.get("name")
        if isinstance(raw_name, str) and raw_name and not CONTROL_CHARS.search(raw_name):
            name = raw_name[:253]
        raw_ns = meta.get("namespace")
        if namespaced and isinstance(raw_ns, str) and raw_ns and not CONTROL_CHARS.search(raw_ns):
            namespace = raw_ns[:63]
    return ObjectRef(kind, name, namespace)


class Ctx:
    """Collects the problems of one object; ``done()`` raises them all at once."""

    def __init__(self, kind: str, obj: object, *, namespaced: bool = False) -> None:
        self.ref = _ref_from(kind, obj, namespaced)
        self.problems: list[FieldProblem] = []

    @classmethod
    def for_ref(cls, ref: ObjectRef) -> Ctx:
        ctx = cls("", None)
        ctx.ref = ref
        return ctx

    def add(self, field: str, message: str, reason: str = "InvalidSpec") -> None:
        self.problems.append(FieldProblem(self.ref, field, message, reason))

    def done(self) -> None:
        if self.problems:
            raise InvalidObject(list(self.problems))

    def fail(self) -> NoReturn:
        """Stop now with the problems so far (the caller has recorded at least one)."""
        raise InvalidObject(list(self.problems))

    # --- typed access: each returns None (and records a problem) when the type is wrong ---

    def get_map(self, m: Mapping[str, object], key: str, path: str, *, required: bool = False,
            reason: str = "InvalidSpec") -> Mapping[str, object] | None:
        value = m.get(key)
        if value is None:
            if required:
                self.add(path, "is required", "MissingField")
            return None
        if not isinstance(value, Mapping):
            self.add(path, f"must be an object, not {type_name(value)}", reason)
            return None
        return value

    def get_list(self, m: Mapping[str, object], key: str, path: str, max_items: int, *,
             required: bool = False, reason: str = "InvalidSpec") -> list[object] | None:
        value = m.get(key)
        if value is None:
            if required:
                self.add(path, "is required", "MissingField")
            return None
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
            self.add(path, f"must be an array, not {type_name(value)}", reason)
            return None
        if len(value) > max_items:
            self.add(path, f"has {len(value)} items; at most {max_items} are allowed", reason)
            return None
        return list(value)

    def get_str(self, m: Mapping[str, object], key: str, path: str, max_len: int, *,
            required: bool = False, reason: str = "InvalidSpec") -> str | None:
        return self.str_value(m.get(key), path, max_len, required=required, reason=reason)

    def str_items(self, items: list[object] | None, path: str, max_len: int, *,
                  reason: str = "InvalidSpec") -> list[tuple[str, str]]:
        """(path, text) of every item of the list at ``path`` that is a string of at most
        ``max_len`` characters; any other item is recorded as a problem at its own index."""
        out: list[tuple[str, str]] = []
        for i, item in enumerate(items or ()):
            item_path = f"{path}[{i}]"
            text = self.str_value(item, item_path, max_len, reason=reason)
            if text is not None:
                out.append((item_path, text))
        return out

    def str_value(self, value: object, path: str, max_len: int, *, required: bool = False,
                  reason: str = "InvalidSpec") -> str | None:
        if value is None:
            if required:
                self.add(path, "is required", "MissingField")
            return None
        if not isinstance(value, str):
            self.add(path, f"must be a string, not {type_name(value)}", reason)
            return None
        if len(value) > max_len:
            self.add(path, f"is {len(value)} characters long; at most {max_len} are allowed",
                     reason)
            return None
        if CONTROL_CHARS.search(value):
            self.add(path, f"{short(value)} contains control characters (CR, LF, NUL ...)",
                     reason)
            return None
        return value

    def get_bool(self, m: Mapping[str, object], key: str, path: str, default: bool) -> bool:
        value = m.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.add(path, f"must be true or false, not {short(value)}")
            return default
        return value

    def get_int(self, m: Mapping[str, object], key: str, path: str, lo: int, hi: int, *,
            reason: str, required: bool = False) -> int | None:
        value = m.get(key)
        if value is None:
            if required:
                self.add(path, "is required", "MissingField")
            return None
        # bool is an int in Python but not in JSON; a float is never an integer field.
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(path, f"must be an integer, not {type_name(value)} {short(value)}", reason)
            return None
        if not lo <= value <= hi:
            self.add(path, f"{value} is out of range {lo}..{hi}", reason)
            return None
        return value


# --- metadata -----------------------------------------------------------------------------------


def metadata(ctx: Ctx, obj: object, *, namespaced: bool) -> tuple[str, str, Mapping[str, object]]:
    """(name, namespace, metadata map) of an object; problems go to ``ctx``."""
    if not isinstance(obj, Mapping):
        ctx.add("", f"must be an object, not {type_name(obj)}", "InvalidObject")
        return "?", "", {}
    meta = ctx.get_map(obj, "metadata", "metadata", required=True)
    if meta is None:
        return "?", "", {}
    name = ctx.get_str(meta, "name", "metadata.name", 253, required=True)
    if name == "":
        ctx.add("metadata.name", "must not be empty", "MissingField")
    name = name or ""
    namespace = ""
    if namespaced:
        namespace = ctx.get_str(meta, "namespace", "metadata.namespace", 63, required=True) or ""
    return name, namespace, meta


def string_map(ctx: Ctx, m: Mapping[str, object], key: str, path: str,
               max_value_len: int = 63) -> dict[str, str]:
    """A map of strings (labels, annotations, selector); entries of the wrong type are reported."""
    raw = ctx.get_map(m, key, path)
    out: dict[str, str] = {}
    if raw is None:
        return out
    for k, v in raw.items():
        if not isinstance(k, str):
            ctx.add(path, f"key {short(k)} is not a string")
            continue
        value = ctx.str_value(v, f"{path}[{k!r}]" if not _plain(k) else f"{path}.{k}",
                              max_value_len)
        if value is not None:
            out[k] = value
    return out


def _plain(key: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9_]+", key))


def labels_of(ctx: Ctx, meta: Mapping[str, object]) -> dict[str, str]:
    # The API server validated the labels; we check only their shape.
    return string_map(ctx, meta, "labels", "metadata.labels")


# --- names --------------------------------------------------------------------------------------


def valid_subdomain(text: str) -> bool:
    return len(text) <= 253 and DNS1123_SUBDOMAIN.fullmatch(text) is not None


def valid_label_name(text: str) -> bool:
    return len(text) <= 63 and DNS1123_LABEL.fullmatch(text) is not None


def name_list(ctx: Ctx, m: Mapping[str, object], key: str, path: str, what: str, *,
              label: bool = False) -> tuple[str, ...]:
    """A list of object names (pools, peers: DNS subdomains; namespaces: DNS labels)."""
    items = ctx.get_list(m, key, path, MAX_NAMES)
    out: list[str] = []
    check = valid_label_name if label else valid_subdomain
    for item_path, text in ctx.str_items(items, path, 253, reason="InvalidName"):
        if not check(text):
            ctx.add(item_path, f"{short(text)} is not a valid {what} name", "InvalidName")
            continue
        if text not in out:
            out.append(text)
    return tuple(out)


# --- label selectors ------------------------------------------------------------------------------


def valid_label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (prefix and valid_subdomain(prefix)):
        return False
    return len(name) <= 63 and LABEL_NAME.fullmatch(name) is not None


def valid_label_value(value: str) -> bool:
    return len(value) <= 63 and LABEL_VALUE.fullmatch(value) is not None


def selector(ctx: Ctx, obj: object, path: str) -> LabelSelector | None:
    """A metav1.LabelSelector; every problem is reported with reason InvalidSelector."""
    reason = "InvalidSelector"
    if not isinstance(obj, Mapping):
        ctx.add(path, f"must be a label selector object, not {type_name(obj)}", reason)
        return None
    before = len(ctx.problems)
    labels: list[tuple[str, str]] = []
    raw_labels = ctx.get_map(obj, "matchLabels", f"{path}.matchLabels", reason=reason)
    if raw_labels is not None:
        if len(raw_labels) > MAX_MATCH_LABELS:
            ctx.add(f"{path}.matchLabels", f"has {len(raw_labels)} entries; at most "
                    f"{MAX_MATCH_LABELS} are allowed", reason)
            raw_labels = {}
        for k, v in raw_labels.items():
            if not isinstance(k, str) or not valid_label_key(k):
                ctx.add(f"{path}.matchLabels", f"{short(k)} is not a valid label key", reason)
                continue
            field = f"{path}.matchLabels[{k!r}]"
            value = ctx.str_value(v, field, 63, reason=reason)
            if value is None:
                continue
            if not valid_label_value(value):
                ctx.add(field, f"{short(value)} is not a valid label value", reason)
                continue
            labels.append((k, value))
    reqs: list[Requirement] = []
    exprs = ctx.get_list(obj, "matchExpressions", f"{path}.matchExpressions", MAX_EXPRESSIONS,
                     reason=reason) or []
    for i, expr in enumerate(exprs):
        req = _requirement(ctx, expr, f"{path}.matchExpressions[{i}]")
        if req is not None:
            reqs.append(req)
    if len(ctx.problems) > before:
        return None
    return LabelSelector(tuple(sorted(labels)), tuple(reqs))


def _requirement(ctx: Ctx, expr: object, path: str) -> Requirement | None:
    reason = "InvalidSelector"
    if not isinstance(expr, Mapping):
        ctx.add(path, f"must be an object, not {type_name(expr)}", reason)
        return None
    before = len(ctx.problems)
    key = ctx.get_str(expr, "key", f"{path}.key", 317, reason=reason)
    if key is None and expr.get("key") is None:
        ctx.add(f"{path}.key", "is required", reason)
    if key is not None and not valid_label_key(key):
        ctx.add(f"{path}.key", f"{short(key)} is not a valid label key", reason)
    op = ctx.get_str(expr, "operator", f"{path}.operator", 32, reason=reason)
    if op is None and expr.get("operator") is None:
        ctx.add(f"{path}.operator", "is required", reason)
    operator: SelectorOperator | None = None
    for candidate in OPERATORS:
        if op == candidate:
            operator = candidate
    if op is not None and operator is None:
        ctx.add(f"{path}.operator", f"unknown operator {short(op)}; use one of "
                + ", ".join(OPERATORS), reason)
    raw_values = ctx.get_list(expr, "values", f"{path}.values", MAX_SELECTOR_VALUES,
                          reason=reason) or []
    values: list[str] = []
    for j, raw in enumerate(raw_values):
        value = ctx.str_value(raw, f"{path}.values[{j}]", 63, reason=reason)
        if value is not None and not valid_label_value(value):
            ctx.add(f"{path}.values[{j}]", f"{short(value)} is not a valid label value", reason)
        elif value is not None:
            values.append(value)
    if operator in ("In", "NotIn") and not raw_values:
        ctx.add(f"{path}.values", f"operator {operator} needs at least one value", reason)
    if operator in ("Exists", "DoesNotExist") and raw_values:
        ctx.add(f"{path}.values", f"operator {operator} takes no values", reason)
    if len(ctx.problems) > before or key is None or operator is None:
        return None
    return Requirement(key, operator, frozenset(values))


def selector_list(ctx: Ctx, m: Mapping[str, object], key: str, path: str
                  ) -> tuple[LabelSelector, ...]:
    items = ctx.get_list(m, key, path, MAX_SELECTORS, reason="InvalidSelector") or []
    out: list[LabelSelector] = []
    for i, item in enumerate(items):
        sel = selector(ctx, item, f"{path}[{i}]")
        if sel is not None:
            out.append(sel)
    return tuple(out)


# --- addresses ------------------------------------------------------------------------------------


def parse_ip(text: str) -> IPAddress | None:
    """One textual IP address, or None. Stricter than ``ipaddress.ip_address``: no IPv6 zone
    (``%eth0``: a load-balancer address or peer must not depend on one node's interface
    names) and no surrounding whitespace."""
    if "%" in text or text != text.strip() or len(text) > MAX_IP_TEXT:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def ip_field(ctx: Ctx, m: Mapping[str, object], key: str, path: str, *,
             required: bool = False, reason: str = "InvalidAddress") -> IPAddress | None:
    text = ctx.get_str(m, key, path, MAX_IP_TEXT + 20, required=required, reason=reason)
    if text is None:
        return None
    addr = parse_ip(text)
    if addr is None:
        ctx.add(path, f"{short(text)} is not an IP address", reason)
    return addr
