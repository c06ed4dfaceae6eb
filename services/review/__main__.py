import sys

from services.review.server import main

sys.exit(main())
