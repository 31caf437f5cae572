"""The ``portico`` command: the one entry point that starts any component (``portico.cli``).

The only package allowed to import every component; nothing imports it.
"""
