"""``python -m postwarden``."""

import sys

from postwarden.cli import main

sys.exit(main())
