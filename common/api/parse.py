"""Parsers: Kubernetes objects (plain dicts, as the API returns them) -> pure model values.

Convention, used by every parser here and in ``common.api.parse_*``:

* A parser is a pure function ``dict -> value``. It reads the object completely, collects
  **every** problem it finds as a :class:`common.api.model.FieldProblem` (``ref`` names the object,
  ``field`` is a JSON-ish path such as ``spec.addresses[2]`` or
  ``metadata.annotations['lb.portico.dev/loadBalancerIPs']``, ``reason`` is the CamelCase
  reason for the Event / status condition), and then either returns the value or raises
  :class:`common.errors.InvalidObject` carrying all problems at once, so a user fixes everything
  in one round trip.
* Nothing else is ever raised, whatever the input (wrong types, missing keys, huge lists,
  control characters): hostile input cannot crash a component. Unknown fields are ignored,
  like the API server prunes them.
* ``parse_service`` returns None for a Service that is not ours (not ``type: LoadBalancer``,
  or another ``loadBalancerClass``); it validates only Services that are ours.
* Nothing enumerates addresses: ranges are (first, last) integers.

Scope: the four Portico kinds are cluster-scoped (so are their CRDs in
``charts/portico/crds/``): pools and peers are cluster-wide resources managed by the cluster
administrator, and names need no namespace. ``BGPPeer.spec.passwordSecret`` names a Secret in
the namespace Portico runs in (the only one the speaker may read Secrets from), so its
``namespace`` is optional; the parser cannot know that namespace, so a different one is
accepted here and reported by the speaker (``PasswordSecretNamespace``).

Reasons used: MissingField, InvalidSpec, InvalidObject, InvalidName, InvalidAddress,
ReversedRange, MixedFamilyRange, OverlappingRanges, InvalidPriority, InvalidSelector,
InvalidInterface, InvalidAggregationLength, InvalidLocalPref, InvalidCommunity, InvalidASN,
InvalidPort, InvalidHoldTime, InvalidKeepaliveTime, InvalidRouterID, InvalidPasswordSecret,
InvalidAnnotation, ConflictingAddressRequest, DuplicateIPFamily, RequestedFamilyMismatch,
InvalidIPFamilies.
"""

from __future__ import annotations

from common.api.model import LabelSelector, ObjectRef
from common.api.parse_adv import (
    parse_bgp_advertisement,
    parse_bgp_peer,
    parse_community,
    parse_duration,
    parse_l2_advertisement,
)
from common.api.parse_common import Ctx, parse_ip, selector
from common.api.parse_pool import parse_address_entry, parse_pool
from common.api.parse_service import parse_namespace_labels, parse_service


def parse_label_selector(obj: object, ref: ObjectRef, field: str) -> LabelSelector:
    """One metav1.LabelSelector found at ``field`` of the object ``ref``; raises
    InvalidObject (reason InvalidSelector) listing every problem."""
    ctx = Ctx.for_ref(ref)
    sel = selector(ctx, obj, field)
    ctx.done()
    assert sel is not None  # selector() returns None only after recording a problem
    return sel


__all__ = [
    "parse_address_entry",
    "parse_bgp_advertisement",
    "parse_bgp_peer",
    "parse_community",
    "parse_duration",
    "parse_ip",
    "parse_l2_advertisement",
    "parse_label_selector",
    "parse_namespace_labels",
    "parse_pool",
    "parse_service",
]
