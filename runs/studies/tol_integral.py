"""tol-integral: does the density integrate to one at a given solver tolerance? (Fig. 2a, App. C-D)

InfoCNF is trained on the Appendix C 1-D mixture of three Gaussians (``InfoCNF-Toy1D-v0``,
fixed tolerance 1e-5). Its marginal density p(x) (log-sum-exp over classes) is then
integrated by a Riemann sum over ``grid`` with every block solved at each tolerance of
``tols``; the study reports |integral - 1| against the tolerance (log plot). The grid alone
(the true mixture density summed on the same points) is accurate to ``grid_error`` in the
JSON. With ``learned``, a second model is trained with REINFORCE gates and the integral is
also computed at the gates' own tolerances (Appendix D reports an error of 0.00014).

``dtype``: the precision the sweep runs the trained model in. float32 is what training and
evaluation use; "float64" separates solver error from float32 round-off at the tightest
tolerances (on a 100-iteration model both gave the same curve: |integral - 1| ~1e-7 at
1e-8, ~4e-5 at 1e-5, ~6e-3 at 1e-1).

Cost (full): 6 runs of 1,000 iterations at ~0.09 s/iteration (one core) plus the sweep
(~0.1-0.4 s per tolerance): ~10 CPU-minutes, ~5 min with ``--jobs 2``.
"""

CONFIG = {
    "env": "InfoCNF-Toy1D-v0",
    "iterations": 1000,
    "learned": True,
    "grid": {"low": -15.0, "high": 15.0, "points": 6001},
    "tols": [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
    "dtype": "float32",
    "env_kwargs": {},
}
QUICK = {
    "iterations": 5,
    "grid": {"points": 801},
    "tols": [1e-8, 1e-5, 1e-2, 1e-1],
    "env_kwargs": {"hidden": 8},
}
