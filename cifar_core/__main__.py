"""`python -m cifar_core ...`: see cifar_core.cli."""
import sys

from .cli import main

sys.exit(main())
