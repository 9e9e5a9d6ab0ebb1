"""frozen: tolerance policies on a frozen, pre-trained flow (new study).

The flow is the ``infocnf`` / ``fixed`` (1e-5) run of ``digits-table`` (``regime``), one
per seed. Each policy then learns on the frozen flow (``train_flow=False``: the flow's
weights never change) for ``iterations`` episodes with the same reward as in co-training.
Afterwards the test set is evaluated with each policy's deterministic tolerances (REINFORCE:
the gate mean; SB3: ``predict(deterministic=True)``), giving one (NFE, bits/dim) point per
policy, against the front traced by fixed tolerances ``front_tols`` on the same batches and
Hutchinson noise. ``excess_bits_per_dim`` is bits/dim at the policy's tolerances minus
bits/dim at 1e-5: negative values mean the policy's loose tolerances make the model *look*
better than it is (solver error), which the bounds (-8, -2) limit.

Cost (full): 15 runs of 300 forward-only episodes (0.45-0.65 s each on one core): ~2,500
CPU-seconds plus ~15 s of evaluation per seed, ~20-25 min with ``--jobs 2`` (plus the 3
pre-training runs, ~17 CPU-minutes, if absent).
"""

CONFIG = {
    "regime": "small",
    "pretrained_policy": "fixed",
    "policies": ["reinforce", "ppo", "sac", "a2c-normadv", "td3"],
    "iterations": 300,
    "front_tols": [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2],
    "eval_batch_size": 100,
}
QUICK = {"iterations": 3, "front_tols": [1e-5, 1e-3, 1e-2], "eval_batch_size": 100}
