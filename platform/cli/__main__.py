"""`python -m dibs.platform.cli ARGS`: the `dibs` command (main.py) without the console script."""

import sys

from dibs.platform.cli.main import main

sys.exit(main())
