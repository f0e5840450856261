"""The liver fibrosis example; importing it sets ``OMP_WAIT_POLICY=PASSIVE`` unless set (docs/liver_fibrosis.rst)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
