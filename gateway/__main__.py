"""``python -m gateway``: the ``collab-gateway`` command."""

from gateway.cli import main

raise SystemExit(main())
