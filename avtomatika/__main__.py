"""``python -m avtomatika``: the same as the ``avtomatika`` command."""

import sys

from avtomatika.cli import main

sys.exit(main())
