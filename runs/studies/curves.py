"""curves: test error, test bits/dim and NFE over training (Fig. 3).

The three models of ``digits-table`` (CCNF, InfoCNF fixed 1e-5, InfoCNF learned) in both
regimes, from their ``eval.jsonl`` (test metrics at tol 1e-5 every ``eval_every`` iterations)
and ``metrics.jsonl`` (training NFE, forward + backward, averaged between evaluations).
Mean ± std over seeds against epochs (examples seen / 1,497).

Cost (full): nothing beyond the digits-table runs (trained on demand: ~50 min with --jobs 2).
"""

CONFIG = {"table": "digits-table"}
QUICK: dict = {}
