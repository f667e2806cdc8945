"""`python -m callguard.cli`: the same command line as `callguard`."""

import sys

from callguard.cli.main import main

sys.exit(main())
