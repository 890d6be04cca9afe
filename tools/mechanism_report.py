"""Write docs/MECHANISM.md from the mechanism suite: ``python tools/mechanism_report.py``."""
from dcac_plugin.cli.mechanism_report import main

raise SystemExit(main())
