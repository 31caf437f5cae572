"""Portico's Kubernetes API as data: the model every component reads (pools, advertisements,
peers, Services as the controller and the speakers see them), the parsers that build it
from CRDs, Services and annotations, reporting each problem with the field it names, and the
rules every component reads the pool configuration by (``pools``: valid ranges, overlaps,
and which pool holds an address).

Pure: imports no I/O library and no adapter module (import-linter contracts).
"""
