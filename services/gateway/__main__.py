"""``python -m services.gateway`` runs the gateway (:mod:`services.gateway.server`)."""

import sys

from services.gateway.server import main

sys.exit(main())
