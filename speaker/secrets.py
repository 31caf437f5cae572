"""Reads the Secrets BGPPeers reference (TCP-MD5 passwords), in Portico's namespace only.

The speaker may GET Secrets only in the namespace it runs in (the chart's Role; it never lists
or watches them). A reference to another namespace is never read: ``referenced_secrets``
leaves it out and the BGP plan reports it on the peer (``PasswordSecretNamespace``).

When a Secret is read again:
- read successfully: after ``refresh`` seconds (a rotated password is picked up);
- refused (403 Forbidden, or 400/422): also only after ``refresh`` seconds. Asking again at
  every rebuild would be refused again; RBAC edited by hand sends the speaker no event, so a
  slow periodic re-read is what notices the fix. The plan reports PasswordSecretForbidden;
- 404 or no answer: at the next rebuild, as before (the Secret may be created any moment).

Each failure is logged once per kind of answer (status), not at every rebuild.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from common.errors import KubeError, Refused
from common.kube import resources as R
from speaker.core.build import referenced_secrets
from speaker.core.snapshot import SecretReadError

SECRET_REFRESH = 60.0  # s between re-reads of the (few) Secrets BGPPeers reference

Key = tuple[str, str]


class PasswordSecrets:
    def __init__(self, client: Any, namespace: str, log: Any,
                 clock: Callable[[], float] = time.monotonic,
                 refresh: float = SECRET_REFRESH) -> None:
        self.client = client
        self.namespace = namespace
        self.log = log
        self.clock = clock
        self.refresh = refresh
        self.data: dict[Key, dict[str, bytes]] = {}
        self.errors: dict[Key, SecretReadError] = {}
        self._read_at: dict[Key, float] = {}
        self._refused: set[Key] = set()
        self.reads = 0  # GETs sent (tests)

    def read(self, bgp_peers: Iterable[Mapping[str, Any]]
             ) -> tuple[dict[Key, dict[str, bytes]], dict[Key, SecretReadError]]:
        """(data, errors) of every referenced Secret in Portico's namespace."""
        wanted = referenced_secrets(bgp_peers, self.namespace)
        for gone in set(self._read_at) - wanted:
            self.data.pop(gone, None)
            self.errors.pop(gone, None)
            self._read_at.pop(gone, None)
            self._refused.discard(gone)
        now = self.clock()
        for key in sorted(wanted):
            fresh = key in self._read_at and now - self._read_at[key] <= self.refresh
            if fresh and (key in self.data or key in self._refused):
                continue
            self._get(key, now)
        return dict(self.data), dict(self.errors)

    def _get(self, key: Key, now: float) -> None:
        ns, name = key
        self._read_at[key] = now
        self.reads += 1
        try:
            obj = self.client.get(R.SECRETS, name, ns)
        except KubeError as exc:
            err = SecretReadError(exc.status, exc.detail if isinstance(exc, Refused)
                                  else str(exc))
            if isinstance(exc, Refused):
                self._refused.add(key)
            else:
                self._refused.discard(key)
            old = self.errors.get(key)
            if old is None or old.status != err.status:
                self.log.warning("secret_read_failed", object=f"{ns}/{name}",
                                 status=exc.status, error=str(exc))
            self.data.pop(key, None)
            self.errors[key] = err
            return
        self._refused.discard(key)
        self.errors.pop(key, None)
        out: dict[str, bytes] = {}
        for k, v in (obj.get("data") or {}).items():
            if not isinstance(v, str):
                continue
            try:
                out[k] = base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                continue  # not what the API server sends; the key then counts as missing
        self.data[key] = out
