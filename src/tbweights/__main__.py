"""`python -m tbweights` runs the CLI."""

import sys

from tbweights.cli import main

sys.exit(main())
