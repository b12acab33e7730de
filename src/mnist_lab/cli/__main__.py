"""`python -m mnist_lab.cli ...`: the `mnist-lab` command (dvc.yaml's `predict` stage runs it this way)."""

import sys

from mnist_lab.cli import main

sys.exit(main())
