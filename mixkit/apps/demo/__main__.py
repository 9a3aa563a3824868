"""`python -m mixkit.apps.demo`, the same as `mixkit demo`."""

import sys

from mixkit.apps.demo import main

sys.exit(main())
