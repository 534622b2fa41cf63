"""``python -m skyretriever``: the same as the ``skyretriever`` command."""

from __future__ import annotations

import sys

from skyretriever.cli import main

sys.exit(main())
