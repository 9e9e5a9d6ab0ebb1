"""eval-batch: evaluating with the learned tolerances at different test batch sizes (App. D).

Uses the ``infocnf`` / ``reinforce`` runs of ``digits-table`` (``regime``). The gates choose
each block's tolerance from each evaluation batch (their mean, the deterministic output), so
the tolerance, and with it the metrics, can depend on the batch size. For each split and
batch size the whole split is evaluated in order; the study reports bits/dim (conditional and
marginal), error, forward NFE per batch and the chosen tolerances, and the difference to the
same split evaluated at tol 1e-5. The paper finds no change at batch sizes up to ~2x the
training batch and worse metrics at 4-9x; here ``train`` goes up to the whole training set
(1,497 = 11.7x the training batch of 128).

Cost (full): ~40 s per seed on a 10-iteration flow, ~1-2 min on a trained one (batch
size 1 is 300 single-image passes); plus the digits-table REINFORCE runs if absent.
"""

CONFIG = {
    "regime": "small",
    "batch_sizes": {"test": [1, 10, 30, 100, 150, 300], "train": [32, 128, 499, 1497]},
    "reference_batch_size": 100,
    "max_examples": None,  # None: the whole split
}
QUICK = {"batch_sizes": {"test": [1, 10], "train": [30]}, "reference_batch_size": 10, "max_examples": 30}
