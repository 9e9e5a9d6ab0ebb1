"""samples: a class-conditional sample grid (Fig. 7).

``per_class`` samples of each digit class at tolerance 1e-5 from the ``infocnf`` /
``reinforce`` run (the paper's figure) and, for comparison, the ``ccnf`` / ``fixed`` run of
``digits-table`` (``regime``). Two numbers say whether the samples carry their class:
``sample_accuracy``, the fraction an independent classifier (scikit-learn logistic
regression fitted on the digits training split, its test accuracy is in the JSON) assigns to
the conditioning class, and ``self_consistency``, the fraction the model's own classifier
q_theta assigns to it (after encoding the samples at 1e-5).

Cost (full): analysis only, seconds per seed (plus the digits-table runs if absent).
"""

CONFIG = {
    "regime": "small",
    "models": [["infocnf", "reinforce"], ["ccnf", "fixed"]],
    "per_class": 10,
    "tol": 1e-5,
}
QUICK = {"per_class": 2}
