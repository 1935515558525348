"""``python -m leukcore.cli``: the ``leuk`` command."""

import sys

from . import main

sys.exit(main())
