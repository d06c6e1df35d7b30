"""The ``groundtruth`` console script, also run as ``python -m groundtruth_entry.cli``.

Importing this module imports nothing of groundtruth's layers: :func:`main` imports :mod:`analysis.cli`
when the command runs, from this installation even when the current folder holds a package of the
same name (:func:`groundtruth_entry.import_own`)."""

from __future__ import annotations

import sys

from groundtruth_entry import import_own


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return import_own("analysis.cli").main(argv)


if __name__ == "__main__":
    sys.exit(main())
