"""`python -m peftlab` (also what `accelerate launch -m peftlab` runs)."""

import sys

from peftlab.cli import main

sys.exit(main())
