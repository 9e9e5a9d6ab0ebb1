"""One small config file per study of ``python -m runs.reproduce STUDY``.

Each module holds plain data: ``CONFIG`` (the full, CPU-sized setting: about an hour per
study on 2 cores) and ``QUICK`` (overrides for ``--quick``, the smoke-test setting used by
``tests/test_reproduce.py``; merged into ``CONFIG`` key by key, nested dicts recursively).
The digits training regimes (``small`` / ``large`` batch) live in :mod:`runs.studies.digits_table`
and are shared by every study that trains a digits flow, so their runs are cached once.
"""

#: study name (the CLI argument) -> module in this package.
MODULES = {
    "digits-table": "digits_table",
    "uncond": "uncond",
    "tol-integral": "tol_integral",
    "tol-hist": "tol_hist",
    "curves": "curves",
    "eval-batch": "eval_batch",
    "policies": "policies",
    "frozen": "frozen",
    "samples": "samples",
    "reinforce-ablation": "reinforce_ablation",
    "latent-probe": "latent_probe",
}
