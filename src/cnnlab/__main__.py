"""``python -m cnnlab``: the command line (torchrun starts data-parallel processes this way:
``torchrun --nproc-per-node 2 -m cnnlab train ...``)."""

import sys

from cnnlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
