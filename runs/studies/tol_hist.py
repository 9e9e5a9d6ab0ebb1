"""tol-hist: learned tolerances per block on the training vs the test set (Fig. 2b).

Uses the ``infocnf`` / ``reinforce`` runs of ``digits-table`` (trained on demand). For each
seed the flow and the gates are loaded from the run's final checkpoint; ``num_batches``
random batches of ``batch_size`` (the training batch size, so the gates see the batch
statistics they were trained on) are drawn from each split, passed through the flow block by
block, and the tolerance each gate chooses (its mean, the deterministic output) is recorded.
The same figure also shows the tolerances the gates sampled during the last quarter of
training (``training_log``). The paper finds similar distributions on train and test.

Cost (full): analysis only, ~25-40 s per seed (plus the 3 digits-table REINFORCE runs,
~18 CPU-minutes, if absent).
"""

CONFIG = {"regime": "small", "num_batches": 40, "batch_size": None}  # None: the regime's batch size
QUICK = {"num_batches": 3}
