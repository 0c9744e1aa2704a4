"""``python -m geoop`` (used by ``torchrun -m geoop train CONFIG``)."""
import sys

from .cli.main import main

sys.exit(main())
