"""``python -m keepwarm``: the ``keepwarm`` command."""

from keepwarm.cli import main

raise SystemExit(main())
