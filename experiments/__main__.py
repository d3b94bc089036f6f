"""``python -m experiments`` is the same as ``python -m experiments.run``."""
import sys

from experiments.run import main

sys.exit(main())
