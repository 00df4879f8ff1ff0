"""``python -m rjobs``: the ``rjobs`` command."""

import sys

from rjobs.cli import main

sys.exit(main())
