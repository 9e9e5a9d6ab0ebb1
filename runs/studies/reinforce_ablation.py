"""reinforce-ablation: what limits REINFORCE's NFE saving? (issue 4's investigation)

InfoCNF on digits (``regime`` of ``digits-table``), co-trained with variants of the REINFORCE
gates, each changing one thing from the defaults (gate init mean -3, gate lr 1e-2, baseline
momentum 0.9, no entropy bonus, discount 0.99, action bounds log10 tol in (-8, -2), alpha 1),
plus fixed 1e-2: the upper action bound for every block, the cheapest a policy within the default
bounds can be. Every variant is compared with the ``digits-table`` fixed-1e-5 arm (the same
runs): training NFE ratio and test bits/dim at 1e-5. The default variant and the fixed arm
are the digits-table runs (shared).

Earlier single-seed tries, not rerun here: alpha 0.1 and 0.3 learned too slowly; gate lr
3e-2 looked unstable; gate init mean -5 gave 0.83x (3 seeds, ``runs/bench_learned_tol.py``).

Cost (full): 18 new runs (6 variants x 3 seeds) of 300 iterations at 0.6-1.1 s/iteration on
one core: ~4,200 CPU-seconds, ~35 min with ``--jobs 2``.
"""

#: variant name -> policy of ``digits_table.POLICIES`` and the flags that replace its own
#: flags (``flags``) and extra environment kwargs (``env``).
CONFIG = {
    "model": "infocnf",
    "regime": "small",
    "reference": "fixed",
    "variants": {
        "reinforce (defaults)": {"policy": "reinforce", "flags": [], "env": {}},
        "gate lr 3e-2": {"policy": "reinforce", "flags": ["--gate-lr", "0.03"], "env": {}},
        "no baseline": {"policy": "reinforce", "flags": ["--no-baseline"], "env": {}},
        "entropy 1e-2": {"policy": "reinforce", "flags": ["--entropy", "0.01"], "env": {}},
        # each gate learns from its own block's NFE only (the last one also from the loss)
        "gamma 0": {"policy": "reinforce", "flags": ["--gamma", "0"], "env": {}},
        "bounds (-8, -1)": {"policy": "reinforce", "flags": [], "env": {"tol_bounds": (-8.0, -1.0)}},
        "fixed 1e-2": {"policy": "fixed", "flags": ["--tol", "1e-2"], "env": {}},
    },
}
QUICK: dict = {}
