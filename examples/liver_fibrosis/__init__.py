"""The liver fibrosis example. Importing it sets ``OMP_WAIT_POLICY=PASSIVE`` unless set: on a shared
CPU, spinning OpenMP threads make small tensor operations up to 100x slower (``ACTIVE`` opts out)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
