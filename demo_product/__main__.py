from __future__ import annotations

import sys

from demo_product.server import main

sys.exit(main())
