"""``python -m lancefeed``: the same as the ``lancefeed`` command."""

from __future__ import annotations

import sys

from lancefeed.cli import main

if __name__ == "__main__":
    sys.exit(main())
