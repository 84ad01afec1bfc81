"""`python -m mdst`: the `mdst` command."""

import sys

from .cli import main

sys.exit(main())
