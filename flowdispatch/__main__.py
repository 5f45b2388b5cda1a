"""``python -m flowdispatch``: the ``flowdispatch`` command (see :mod:`flowdispatch.cli`)."""

from __future__ import annotations

if __name__ == "__main__":
    from .cli import main

    raise SystemExit(main())
