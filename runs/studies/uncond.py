"""uncond: unconditional CNF with vs without learned tolerances (paper Fig. 4, Section 4.4).

``CNF-Digits-v0`` (N(0, I) prior, no classifier) trained in the ``small`` digits regime with
fixed tolerance 1e-5 and with REINFORCE gates; test bits/dim at 1e-5 and training NFE per
iteration, as final numbers (mean ± std over seeds) and as curves over training. The paper
reports equal NLLs (3.37 bits/dim on CIFAR10) and 15% fewer NFEs with learned tolerances.

Cost (full): 6 runs of 300 iterations at ~1.0-1.1 s/iteration (one core): ~2,000
CPU-seconds, ~17 min with ``--jobs 2``.
"""

CONFIG = {"model": "cnf", "regime": "small", "policies": ["fixed", "reinforce"]}
QUICK: dict = {}
