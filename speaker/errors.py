"""Exception tree of the speaker (drawn in ``speaker/__init__.py`` with what else it raises).

    PorticoError                  common.errors
    └── SpeakerError              anything the speaker itself raises on purpose
        ├── ExaBgpError           exabgp died, did not start, or did not acknowledge in time
        ├── GrammarError          a value that cannot be written into exabgp's grammar safely
        └── LivenessKeyError      the liveness key file is unreadable or holds no usable key

Pure (import-linter ``pure`` contract): the pure cores raise these too.
"""

from __future__ import annotations

from common.errors import PorticoError


class SpeakerError(PorticoError):
    """Root of every exception the speaker package defines."""


class ExaBgpError(SpeakerError):
    """exabgp died, did not start, or did not acknowledge in time (``speaker.bgp.process``).

    The BGP announcer restarts exabgp with backoff; layer 2 is unaffected."""


class GrammarError(SpeakerError):
    """A value that cannot be written into exabgp's grammar safely (``speaker.core.bgp_exabgp``).

    A bug, not user input: every value is validated long before it is rendered."""


class LivenessKeyError(SpeakerError):
    """The liveness key file (``--liveness-key-file``) is unreadable or holds no usable key
    at start (``speaker.liveness``). Later, a bad file is logged and the keys in use are kept:
    a speaker must not stop hearing its peers because of an edit in progress."""
