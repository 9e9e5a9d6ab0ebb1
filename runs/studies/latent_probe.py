"""latent-probe: where does the class information sit in z? (new study)

Why InfoCNF misses the error target of ``digits-table``: its representation, or its
classifier? For the ``ccnf`` and ``infocnf`` runs of ``digits-table`` (``policy``, every
regime in ``regimes``), the flow maps the digits training and test sets to z at tolerance
1e-5, and a linear probe (scikit-learn multinomial logistic regression, fitted on the
training latents) is trained on three slices of z:

* ``z_y``: the first ``sup_ratio`` (0.5) of z, InfoCNF's supervised code (Section 3.1),
* ``z_u``: the rest, InfoCNF's unsupervised code, which Section 3.1 says holds the other
  variations of the data and so should carry little of the class,
* ``z``: all of it, what CCNF's classifier sees.

The rows report the probes' test error next to the model's own classifier q_theta (with
dropout off) and the run's test bits/dim. Besides the two ``digits-table`` regimes, the
``large-long`` regime trains both models with large batches for twice the epochs (154
iterations, the same schedule shape), to see whether InfoCNF's large-batch gap closes with
training. The same slices are probed on CCNF for reference, though CCNF's prior covers
all of z. A probe beating the model's own classifier on the same slice means that
classifier is under-trained, not that the representation lacks the class.

Cost (full): ~10 s of analysis per run (18 runs: 2 models x 3 regimes x 3 seeds), plus
training the 6 ``large-long`` runs (154 iterations at ~4.3 s: ~4,000 CPU-seconds, ~35 min
with ``--jobs 2``) and the digits-table runs if absent.
"""

CONFIG = {
    "models": ["ccnf", "infocnf"],
    "policy": "fixed",
    "regimes": ["small", "large", "large-long"],
    "sup_ratio": 0.5,
    "max_train": None,  # probe on all 1,497 training digits
}
QUICK = {"max_train": 200}
