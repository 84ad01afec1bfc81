"""`python -m mdst.eval ARGS`: lm_eval's command line (the same ARGS) with the "mdst" model registered."""

import sys

from .harness import lm_eval_cli

if __name__ == "__main__":
    sys.exit(lm_eval_cli(sys.argv[1:]))
