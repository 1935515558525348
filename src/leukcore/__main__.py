"""``python -m leukcore``: the ``leuk`` command."""

import sys

from .cli import main

sys.exit(main())
