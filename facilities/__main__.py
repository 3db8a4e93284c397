"""Run the `facilities` command with `python -m facilities`."""

from facilities.cli import main

raise SystemExit(main())
