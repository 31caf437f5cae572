"""Pure logic of the controller: data in, data out. Imports no I/O library (checked by
tests/unit/test_purity.py)."""
