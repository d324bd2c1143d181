"""``python -m inference``: see inference/cli.py."""

from inference.cli import main

raise SystemExit(main())
