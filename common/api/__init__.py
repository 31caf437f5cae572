"""Portico's Kubernetes API as data: the model every component reads (pools, advertisements,
peers, Services as the controller and the speakers see them) and the parsers that build it
from CRDs, Services and annotations, reporting each problem with the field it names.

Pure: imports no I/O library and no adapter module (import-linter contracts).
"""
