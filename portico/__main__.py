"""``python -m portico``: the same as the ``portico`` command."""

import sys

from portico.cli import main

sys.exit(main())
