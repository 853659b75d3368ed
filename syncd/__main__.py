"""``python -m syncd``: the same as the ``syncd`` command."""

from __future__ import annotations

import sys

from syncd.app.cli import main

sys.exit(main())
