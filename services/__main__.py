"""``python -m services`` is ``python -m services.server``."""

import sys

from services.server import main

sys.exit(main())
