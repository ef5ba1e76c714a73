"""python -m skelang: the same as the skelang command."""

import sys

from skelang.cli import main

sys.exit(main())
