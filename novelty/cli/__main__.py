"""``python -m novelty.cli`` runs the ``novelty`` command."""

import sys

from novelty.cli import main

sys.exit(main())
