"""The liver fibrosis example: train, evaluate, predict, export and the Table I ablation.

Importing this package (``python -m examples.liver_fibrosis.train`` does so before torch is loaded)
sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is already set: OpenMP threads then sleep instead of
spinning while they wait. On a CPU shared with other processes, spinning threads make small tensor
operations (the per-sample transforms) up to 100x slower and halve training throughput; on an idle
machine the cost of sleeping is a few percent. Set ``OMP_WAIT_POLICY=ACTIVE`` to opt out.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
