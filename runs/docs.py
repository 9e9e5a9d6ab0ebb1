"""docs/results.md, generated from the result files in runs/results/.

    python -m runs.docs              # (re)write docs/results.md
    python -m runs.docs --check      # exit 1 if docs/results.md differs from what the JSON gives
    python -m runs.docs --stdout     # print it instead

Every number on the generated page is formatted from a field of a committed JSON file (the
tables by :mod:`runs.tables`, the prose by the per-study templates below), so no figure can
drift from the results it describes: change a result, rerun this command, commit both.
A study whose JSON is absent is left out, and so is any sentence that needs it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from runs.tables import cell, table, targets

RESULTS = Path("runs/results")
OUT = Path("docs/results.md")
#: Where the generated page's image links point to, relative to ``OUT``.
IMAGES = "../runs/results"

Res = dict[str, Any]

T = TypeVar("T")


# ----------------------------------------------------------------------------- formatting


def pct(value: float, digits: int = 2) -> str:
    """A relative difference in percent, with its sign: ``+1.85%``."""
    return f"{100 * value:+.{digits}f}%"


def apct(value: float, digits: int = 2) -> str:
    """An unsigned percentage: ``0.13%``."""
    return f"{100 * abs(value):.{digits}f}%"


def sci(value: float, digits: int = 0) -> str:
    """A tolerance in short scientific notation: ``1e-2``, ``7e-3``, ``1.5e-3``."""
    mantissa, exponent = f"{value:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def tol10(log10_tol: float, digits: int = 0) -> str:
    """A tolerance given by its log10: ``tol10(-2.0) == "1e-2"``."""
    return sci(10.0 ** log10_tol, digits)


def nums(values: list[float], digits: int = 2) -> str:
    """Plain numbers as ``-1.70, -2.05``."""
    return ", ".join(f"{v:.{digits}f}" for v in values)


def xs(values: list[float], digits: int = 2) -> str:
    """Ratios as ``0.70x, 0.81x, 0.70x``."""
    return ", ".join(f"{v:.{digits}f}x" for v in values)


def rng(values: list[float], digits: int, sep: str = "-") -> str:
    """``lo-hi`` of the values (one value if they round equal)."""
    lo, hi = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return lo if lo == hi else f"{lo}{sep}{hi}"


def bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items if item)


def row(rows: list[dict], **match: Any) -> dict:
    """The one row whose fields equal ``match``."""
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise KeyError(f"{len(found)} rows match {match}")
    return found[0]


def per_seed(r: dict, key: str) -> list[float]:
    return [s[key] for s in r["per_seed"]]


def within_std(a: dict, b: dict, key: str) -> bool:
    """Whether two rows' means differ by less than the larger of their stds."""
    return abs(a[f"{key}_mean"] - b[f"{key}_mean"]) <= max(a[f"{key}_std"], b[f"{key}_std"])


def figure(study: str) -> str:
    return f"![{study}]({IMAGES}/{study}.png)"


# ----------------------------------------------------------------------------- shared facts


def required(value: T | None, study: str) -> T:
    """``value``, read from ``study``'s results: one clear error where the page lacks them."""
    if value is None:
        raise ValueError(f"this section of the results page needs {study}.json")
    return value


def upper_bound(res: Res) -> float | None:
    """log10 of the default action bound: where the ``fixed 1e-2`` ablation arm sits."""
    if "reinforce-ablation" not in res:
        return None
    return row(res["reinforce-ablation"]["rows"], variant="fixed 1e-2")["log10_tol_last_mean"]


def eval_tol(res: Res) -> str:
    """The evaluation tolerance, from eval-batch's reference rows (or samples' config)."""
    if "eval-batch" in res:
        return sci(res["eval-batch"]["reference"][0]["tol"])
    return sci(res["samples"]["config"]["tol"]) if "samples" in res else "the evaluation tolerance"


def num_blocks(res: Res) -> int | None:
    if "tol-hist" not in res:
        return None
    return 1 + max(r["block"] for r in res["tol-hist"]["rows"])


def num_train(res: Res) -> int | None:
    if "eval-batch" not in res:
        return None
    return row(res["eval-batch"]["rows"], split="train", batch_size=res["eval-batch"]["rows"][-1]["batch_size"])[
        "num_samples"]


# ----------------------------------------------------------------------------- sections


def backward_nfe(d: Res) -> str:
    """Which backward NFE the training NFE holds (the studies' ``env_kwargs`` may turn on the adjoint)."""
    see = "([what NFE counts](flows.md#nfe-what-is-counted))"
    if any(r["env_kwargs"].get("adjoint") for r in d["regimes"].values()):
        return f"Backward NFE is the adjoint solve's evaluations, as in the paper {see}."
    share = [r["nfe_backward_mean"] / r["nfe_forward_mean"] for r in d["rows"]]
    return ("The digits studies back-propagate directly (adjoint off, the `InfoCNF-Digits-v0` default), so "
            "backward NFE is the number of forward evaluations the gradient flows through "
            f"({rng([100 * x for x in share], 0)}% of the forward NFE in `digits-table`), not the evaluations of "
            f"an adjoint solve as in the paper {see}.")


def intro(res: Res) -> str:
    d = res["digits-table"]
    seeds = len(d["seeds"])
    small, large = d["regimes"]["small"], d["regimes"]["large"]
    epochs = {b: row(d["rows"], model="infocnf", policy="fixed", batch=b)["epochs"] for b in ("small", "large")}
    ep = rng(list(epochs.values()), 1)
    walls = [w for r in d["rows"] for w in per_seed(r, "wall_s")]
    n_test = row(res["eval-batch"]["rows"], split="test", batch_size=1)["num_samples"] if "eval-batch" in res else None
    blocks = num_blocks(res)
    test = f" on the {n_test} test digits" if n_test else ""
    arch = f", {blocks} CNF blocks" if blocks else ""
    return f"""\
Every study here is `python -m runs.reproduce STUDY --seeds {seeds}` (one config per study in
`runs/studies/`, whose docstring says what it runs and what it costs), which writes
`runs/results/STUDY.json` and `STUDY.png`; the tables alone print with `python -m runs.tables`.
Mean ± std over {seeds} seeds; test metrics at tolerance {eval_tol(res)}{test}; training NFE is
forward + backward per iteration averaged over the whole run.
{backward_nfe(d)}
Equal budget within a regime:
{small['iterations']} iterations of batch {small['batch_size']} (small) or {large['iterations']} iterations of \
batch {large['batch_size']}, learning rate x{large['lr'] / small['lr']:.1f} (large): {ep} epochs either way.
The flow is the multiscale architecture of Appendix B cut to digits size (the `InfoCNF-Digits-v0`
defaults{arch}), so these are small models trained for {min(walls) / 60:.0f}-{max(walls) / 60:.0f} minutes per run,
not the paper's full-length training. Wall times were measured with runs sharing the machine's
cores: compare them within a table only."""


def digits_table(res: Res) -> str:
    d = res["digits-table"]
    rows, cfg = d["rows"], d["config"]["targets"]
    t = {x["batch"]: x for x in d["targets"]}
    learned = {b: row(rows, model="infocnf", policy="reinforce", batch=b) for b in ("small", "large")}
    fixed = {b: row(rows, model="infocnf", policy="fixed", batch=b) for b in ("small", "large")}
    ccnf = {b: row(rows, model="ccnf", policy="fixed", batch=b) for b in ("small", "large")}
    seed_ratios = [a / b for a, b in zip(per_seed(learned["small"], "nfe"), per_seed(fixed["small"], "nfe"),
                                         strict=True)]
    walls = {b: learned[b]["wall_s_mean"] / fixed[b]["wall_s_mean"] for b in ("small", "large")}
    bpd = max(abs(t[b]["learned_bits_per_dim_rel_diff"]) for b in t)
    met = [b for b in ("large", "small") if t[b]["nfe_target_met"]]
    missed = [b for b in ("large", "small") if not t[b]["nfe_target_met"]]
    verdict = (f"is met with {' and '.join(met) or 'no'} batches" + (f" and missed with {' and '.join(missed)} ones"
                                                                      if missed else ""))
    tols = per_seed(learned["small"], "log10_tol_last")
    ub = upper_bound(res)
    floor = ""
    if ub is not None:
        f12 = row(res["reinforce-ablation"]["rows"], variant="fixed 1e-2")
        floor = (f" Fixed {tol10(ub)}, the bound itself, costs {f12['nfe_ratio_vs_fixed']:.3f}x, so "
                 f"{cfg['nfe_ratio']:.2f}x is about the best any policy inside the default bounds can do "
                 "([`reinforce-ablation`](#reinforce-ablation)).")
    small_within = within_std(fixed["small"], ccnf["small"], "test_error")
    rel = [t[b]["infocnf_bits_per_dim_rel_diff"] for b in t]
    probe = ""
    if "latent-probe" in res and "samples" in res:
        lp = res["latent-probe"]
        dims = math.prod(res["samples"]["image_shape"])
        probe = (f" The classifier of InfoCNF sees {_share(lp['config']['sup_ratio'])} of z "
                 f"(z_y, {round(lp['config']['sup_ratio'] * dims)} of {dims} dimensions) and its large-batch runs are "
                 f"short ({d['regimes']['large']['iterations']} iterations); at this scale the split costs accuracy "
                 "rather than helping ([`latent-probe`](#latent-probe) shows where the class sits in z and what "
                 "twice the epochs changes).")
    err_met = any(t[b]["error_target_met"] for b in t)
    bpd_rng = {b: [r["bits_per_dim_mean"] for r in rows if r["batch"] == b] for b in ("small", "large")}
    return "\n\n".join([figure("digits-table"), table(d, "digits-table"), targets(d), "What holds and what does not:",
                        bullets([
        f"**Learned tolerances cut training NFE at no cost in test bits/dim**: "
        f"{t['small']['nfe_ratio']:.2f}x the fixed-{eval_tol(res)} arm with small batches (per seed "
        f"{xs(seed_ratios)}), {t['large']['nfe_ratio']:.2f}x with large batches, test bits/dim equal to "
        f"{apct(bpd)}. Wall time drops with it ({walls['small']:.2f}x small, {walls['large']:.2f}x large). "
        f"The target (NFE <= {cfg['nfe_ratio']}x at bits/dim within {cfg['nfe_bpd_tol']:.0%}) {verdict}. "
        f"The gates end below the upper bound (final mean log10 tol {rng(tols, 2, ' to ')} with small batches"
        + (f", against the bound {ub:.0f})." if ub is not None else ").") + floor,
        f"**InfoCNF does not beat CCNF here.** The paper's InfoCNF has lower test error than CCNF at similar "
        f"bits/dim. On digits, InfoCNF's error is {t['small']['error_ratio']:.2f}x CCNF's with small batches "
        f"({fixed['small']['test_error_mean']:.3f} vs {ccnf['small']['test_error_mean']:.3f}"
        + (", within one std" if small_within else "")
        + f") and {t['large']['error_ratio']:.1f}x with large batches ({fixed['large']['test_error_mean']:.3f} vs "
        f"{ccnf['large']['test_error_mean']:.3f}), and its bits/dim are {rng([100 * r for r in rel], 2)}% worse."
        + probe + f" Target (error <= {cfg['error_ratio']}x at bits/dim within {cfg['error_bpd_tol']:.0%}) "
        + ("met." if err_met else "not met."),
        f"The large-batch, large-learning-rate regime is worse than the small-batch one for every arm "
        f"({rng(bpd_rng['large'], 2)} vs {rng(bpd_rng['small'], 2)} bits/dim) at equal epochs, as in the paper "
        "(Table 1's large-batch rows are worse too); the paper's literal learning-rate scaling diverged here "
        "(see `runs/studies/digits_table.py`)."
        if max(bpd_rng["small"]) < min(bpd_rng["large"]) else "",
    ])])


def latent_probe(res: Res) -> str:
    d = res["latent-probe"]
    rows = d["rows"]

    def e(model: str, batch: str, features: str) -> float:
        return row(rows, model=model, batch=batch, features=features)["test_error_mean"]

    def b(model: str, batch: str) -> float:
        return row(rows, model=model, batch=batch, features="own classifier")["bits_per_dim_mean"]

    regimes = d["regimes"]
    long_, large = regimes["large-long"], regimes["large"]
    n_train = num_train(res)
    classes = _num_classes(res)
    chance = f"; chance is {1 - 1 / classes:.2f}" if classes else ""
    fitted = f"the {n_train:,} training latents" if n_train else "the training latents"
    long_epochs = (f", {long_['iterations'] * long_['batch_size'] / n_train:.0f} epochs" if n_train else "")
    ratio = {r: e("infocnf", r, "own classifier") / e("ccnf", r, "own classifier") for r in ("large", "large-long")}
    return "\n\n".join([figure("latent-probe"), table(d, "latent-probe"), f"""\
Each trained flow maps the digits to z at {eval_tol(res)}; a linear probe (logistic regression fitted on
{fitted}) is trained on z_y (the first {_share(d['config']['sup_ratio'])} of z, InfoCNF's supervised code), on z_u (the
rest) and on all of z, and scored on the test set next to the model's own classifier.
"large-long" is the large-batch regime trained for {long_['iterations'] / large['iterations']:.0f}x the epochs
({long_['iterations']} iterations{long_epochs}) for CCNF and InfoCNF.""", bullets([
        (f"**The partition works as the paper describes when InfoCNF has trained enough.** With small batches, "
        f"InfoCNF's z_y carries all the class a linear probe can find in z ({e('infocnf', 'small', 'probe z_y'):.3f} "
        f"vs {e('infocnf', 'small', 'probe z'):.3f}) and z_u much less ({e('infocnf', 'small', 'probe z_u'):.3f}"
        f"{chance}), and its own classifier reads z_y as well as a probe does "
        f"({e('infocnf', 'small', 'own classifier'):.3f}). CCNF, whose prior covers all of z, spreads the class "
        f"over both parts ({e('ccnf', 'small', 'probe z_y'):.3f} and {e('ccnf', 'small', 'probe z_u'):.3f})."),
        (f"**With large batches the partition has not formed.** After {large['iterations']} iterations InfoCNF's z_u "
        f"still carries as much class as z_y ({e('infocnf', 'large', 'probe z_u'):.3f} vs "
        f"{e('infocnf', 'large', 'probe z_y'):.3f}), and its own classifier is worse than a probe on the same z_y "
        f"({e('infocnf', 'large', 'own classifier'):.3f} vs {e('infocnf', 'large', 'probe z_y'):.3f}): both the "
        f"representation and the zero-initialised classifier lag, which is the {ratio['large']:.1f}x error of "
        f"[`digits-table`](#digits-table). All of z is about as good as CCNF's ({e('infocnf', 'large', 'probe z'):.3f} "
        f"vs {e('ccnf', 'large', 'probe z'):.3f}), so the flow itself is not worse."),
        (f"**{long_['iterations'] / large['iterations']:.0f}x the epochs narrows the gap but does not close it**: "
        f"InfoCNF's error falls from {e('infocnf', 'large', 'own classifier'):.3f} to "
        f"{e('infocnf', 'large-long', 'own classifier'):.3f}, CCNF's from {e('ccnf', 'large', 'own classifier'):.3f} "
        f"to {e('ccnf', 'large-long', 'own classifier'):.3f} ({ratio['large-long']:.1f}x instead of "
        f"{ratio['large']:.1f}x), and InfoCNF's own classifier has caught up with the probe on z_y "
        f"({e('infocnf', 'large-long', 'own classifier'):.3f} vs {e('infocnf', 'large-long', 'probe z_y'):.3f}), "
        f"while z_u is slowly losing the class ({e('infocnf', 'large', 'probe z_u'):.3f} to "
        f"{e('infocnf', 'large-long', 'probe z_u'):.3f}). InfoCNF's bits/dim stay "
        f"{apct(b('infocnf', 'large-long') / b('ccnf', 'large-long') - 1, 1)} worse than CCNF's "
        f"({b('infocnf', 'large-long'):.4f} vs {b('ccnf', 'large-long'):.4f}). At the scale we can afford, the "
        "large-batch InfoCNF needs more updates than the budget gives for the class to move into z_y; the paper's "
        "much longer training may be what makes the difference there, which we cannot test here."),
    ])])


def beta(res: Res) -> str:
    d = res["beta"]
    rows = d["rows"]
    regimes = list(dict.fromkeys(r["batch"] for r in rows))
    betas = sorted({r["beta"] for r in rows})
    pixel = d["pixel_probe_error"]

    def r(model: str, batch: str, b: float) -> dict:
        return row(rows, model=model, batch=batch, beta=b)

    def err(model: str, batch: str, b: float) -> str:
        x = r(model, batch, b)
        return f"{x['test_error_mean']:.3f} ± {x['test_error_std']:.3f}"

    top = betas[-1]
    shown = "; ".join(f"{', '.join(f'{b:g}' for b in sorted({x['beta'] for x in rows if x['batch'] == batch}))} "
                      f"({batch} batch)" for batch in regimes)
    gap = []
    for batch in regimes:
        comps = sorted((c for c in d["comparisons"] if c["batch"] == batch), key=lambda c: c["beta"])
        batch_betas, ratios = [c["beta"] for c in comps], [c["error_ratio"] for c in comps]
        info, ccnf = r("infocnf", batch, top), r("ccnf", batch, top)
        closed = info["test_error_mean"] <= ccnf["test_error_mean"]
        within = abs(info["test_error_mean"] - ccnf["test_error_mean"]) <= max(info["test_error_std"],
                                                                                ccnf["test_error_std"])
        verdict = ("InfoCNF is ahead" if closed else "InfoCNF is still behind") + (
            ", within one standard deviation" if within else "")
        gap.append(f"**{batch} batch**: InfoCNF's test error over CCNF's is "
                   f"{xs([x if x is not None else float('nan') for x in ratios])} at beta "
                   f"{', '.join(f'{b:g}' for b in batch_betas)}; at "
                   f"beta {top:g} (CIFAR10's ratio) {verdict}: {err('infocnf', batch, top)} vs "
                   f"{err('ccnf', batch, top)}.")
    own = [(x["test_error_mean"], x["model"], x["batch"], x["beta"]) for x in rows]
    below = [o for o in own if o[0] < pixel]
    best = min(own)
    zy_best = min(x["zy_probe_error_mean"] for x in rows if x["model"] == "infocnf")
    ceiling = (f"**The ceiling.** A logistic regression on the raw pixels errs {pixel:.3f}. "
               + (f"No model's own classifier gets below it (best: {best[1]}, {best[2]} batch, beta {best[3]:g}: "
                  f"{best[0]:.3f}), and no probe on InfoCNF's z_y does either (best {zy_best:.3f})"
                  if not below else
                  f"{len(below)} of {len(own)} configurations' own classifiers get below it, all at beta "
                  f"{min(o[3] for o in below):g} or more (best: {best[1]}, {best[2]} batch, beta {best[3]:g}: "
                  f"{best[0]:.3f}); the best probe on InfoCNF's z_y errs {zy_best:.3f}")
               + (": on digits the flows' linear read-out has little or no room to improve on the pixels, so an "
                  "accuracy gain of InfoCNF over CCNF has little room to show." if not below else
                  ": stronger supervision, for CCNF as for InfoCNF, is what moves the flows' error below the "
                  "pixel ceiling."))
    ccnf_rows = [x for x in rows if x["model"] == "ccnf"]
    pairs = [(r("infocnf", x["batch"], x["beta"])["zy_probe_error_mean"], x["zy_probe_error_mean"]) for x in ccnf_rows]
    misses = [f"{x['batch']} batch, beta {x['beta']:g}" for x, (i, c) in zip(ccnf_rows, pairs, strict=True) if i >= c]
    partition = (f"**Where the class sits.** A probe on InfoCNF's z_y errs less than one on the same slice of CCNF's z "
                 f"in {sum(i < c for i, c in pairs)} of {len(pairs)} (batch, beta) pairs "
                 f"({nums([i for i, _ in pairs], 3)} vs {nums([c for _, c in pairs], 3)}): the partition gathers the "
                 "class in z_y, as Section 3.1 intends" + (f", except with {', '.join(misses)}." if misses else "."))
    cost = []
    for model in ("ccnf", "infocnf"):
        parts = [f"{pct(r(model, b, top)['bits_per_dim_mean'] / r(model, b, betas[0])['bits_per_dim_mean'] - 1, 1)}"
                 f" ({b} batch)" for b in regimes]
        cost.append(f"{ {'ccnf': 'CCNF', 'infocnf': 'InfoCNF'}[model]} {', '.join(parts)}")
    bpd = (f"**What the supervision costs in likelihood**: test bits/dim at beta {top:g} against beta "
           f"{betas[0]:g}: {'; '.join(cost)}.")
    per_unit_beta = rows[0]["supervision_ratio"] / rows[0]["beta"]  # D ln 2 of digits
    return "\n\n".join([figure("beta"), table(d, "beta"), f"""\
J = bits/dim + beta x cross-entropy (Eq. 4). Bits/dim is the negative log-likelihood divided by D ln 2, so per
example the cross-entropy weighs beta x D x ln 2 times the NLL in nats: {d['cifar10_supervision_ratio']:.0f} in the
authors' CIFAR10 runs (beta 0.5, D = 3072), {per_unit_beta:.0f} in the digits-table runs (beta 1, D = 64).
CCNF and InfoCNF with the authors' heads (`head_init="linear_zeros"`) are trained at beta {shown}
(the largest matches CIFAR10's ratio on digits), {len(d['seeds'])} seeds, fixed
tolerance 1e-5 with warm-started steps (which leaves bits/dim unchanged, see [`speed`](#speed)); the other
choices are the digits ids' (three-layer dynamics, fixed end time). "probe z_y" / "probe z" are logistic
regressions fitted on the training latents at 1e-5 (for CCNF, z_y is the same slice of z).""", bullets(
        [*gap, ceiling, partition, bpd])])


def _spirals_head(p: dict) -> str:
    """What the partitioned LatentODE's (a, b) head learned, against the prior means and a linear probe on z."""
    text = (f"The partitioned model's (a, b) head (`spirals.json`) errs by {p['a_mae_mean']:.4f} in a and "
            f"{p['b_mae_mean']:.4f} in b against the prior means' {p['a_prior_mean_error']:.4f} and "
            f"{p['b_prior_mean_error']:.4f} (`ab_error` {p['ab_error']:.4f} vs `ab_prior_mean_error` "
            f"{p['ab_prior_mean_error']:.4f}).")
    if "b_probe_error_mean" in p:
        holds = p["b_probe_error_mean"] < 0.9 * p["b_prior_mean_error"]
        text += (f" A linear probe from all of z_t0 to (a, b) errs {p['a_probe_error_mean']:.4f} and "
                 f"{p['b_probe_error_mean']:.4f}: " + (
                     "the encoder holds some of b, so the head, not the representation, is what falls short."
                     if holds else "the encoder itself does not hold (a, b) in a linear form at this budget, so no "
                     "linear head on z_y can read it."))
    losses = [s["epoch_losses"] for s in p.get("per_seed", []) if len(s.get("epoch_losses", [])) >= 6]
    if losses:
        drop = [1 - ls[-1] / ls[-6] for ls in losses]
        text += (f" Its training loss fell by {rng([100 * d for d in drop], 1)}% over the last 5 epochs "
                 f"(per seed){', so training had not converged' if min(drop) > 0.01 else ''}.")
    return text


def _share(ratio: float) -> str:
    return "half" if ratio == 0.5 else f"{ratio:.0%}"


def curves(res: Res) -> str:
    rows = res["curves"]["rows"]
    cuts, gaps, gaps_err, spread = [], [], [], {}
    for batch in ("small", "large"):
        learned = row(rows, model="infocnf", policy="reinforce", batch=batch)
        fixed = row(rows, model="infocnf", policy="fixed", batch=batch)
        cuts += [1 - a / b for a, b in zip(learned["nfe_mean"], fixed["nfe_mean"], strict=True)]
        gaps += [abs(a - b) for a, b in zip(learned["bits_per_dim_mean"], fixed["bits_per_dim_mean"], strict=True)]
        gaps_err += [abs(a - b) for a, b in zip(learned["test_error_mean"], fixed["test_error_mean"], strict=True)]
        spread[batch] = max(learned["nfe_std"])
    n_points = len(row(rows, model="infocnf", policy="reinforce", batch="small")["iteration"])
    return "\n\n".join([figure("curves"), f"""\
Test error and bits/dim of the learned-tolerance arm track the fixed-{eval_tol(res)} arm through training in
both regimes (at each of the {n_points} evaluations, bits/dim within {max(gaps):.4f} and error within \
{max(gaps_err):.3f}
of each other), while its training NFE stays {100 * min(cuts):.0f}-{100 * max(cuts):.0f}% lower at every evaluation
(the paper's Fig. 3). The NFE of the learned arm varies more across seeds with small batches
(std up to {spread['small']:.1f} NFE per iteration, against {spread['large']:.1f} with large batches)."""])


def tol_integral(res: Res) -> str:
    d = res["tol-integral"]
    front = sorted((r for r in d["rows"] if r["policy"] == "fixed"), key=lambda r: r["tol"])
    learned = row(d["rows"], policy="reinforce")
    errors = [r["abs_error_mean"] for r in front]
    steady = all(a <= b for a, b in itertools.pairwise(errors))
    loosest = [r for r in front if r["tol"] >= learned["tol"]]
    return "\n\n".join([figure("tol-integral"), table(d, "tol-integral"), f"""\
A 1-D CNF trained on a mixture of Gaussians (Appendix C), integral of its density over a grid
(the grid's own error on the true density is {sci(d['grid_error'], 1)}). The error grows \
{'steadily' if steady else 'overall'} as the
tolerance loosens, from {sci(front[0]['abs_error_mean'])} at {sci(front[0]['tol'])} to \
{' and '.join(f"{r['abs_error_mean']:.2f} at {sci(r['tol'])}" for r in loosest)}, as in the paper. The learned
tolerances (geometric mean {sci(learned['tol'])}) give a density that integrates to {cell(learned, 'integral', 2)}: a
model trained at loose tolerances is a poor density when solved at them, which is why every
reported metric is computed at {eval_tol(res)}."""])


def tol_hist(res: Res) -> str:
    d = res["tol-hist"]
    per = d["config"]["num_batches"]
    ranges, last_at_bound = [], True
    blocks = required(num_blocks(res), "tol-hist")
    for r in d["rows"]:
        if r["split"] == "training_log":
            continue
        chunks = [r["values"][i:i + per] for i in range(0, len(r["values"]), per)]
        ranges += [max(c) - min(c) for c in chunks]
        if r["block"] == blocks - 1:
            last_at_bound &= min(r["values"]) == max(r["values"]) == r["log10_tol_q90"]
    log = [r for r in d["rows"] if r["split"] == "training_log"]
    seeds = len(d["seeds"])
    iterations = d["regimes"][d["config"]["regime"]]["iterations"]
    frac = log[0]["num_values"] / seeds / iterations
    return "\n\n".join([figure("tol-hist"), table(d, "tol-hist"), f"""\
The gates' deterministic choices (their means, batches of {d['batch_size']}) on the training and the test
set agree to {sci(d['max_train_test_gap_log10'])} in log10 tol, as in the paper. They differ by block more than by
input: within one seed a gate's choice varies by at most {max(ranges):.3f} in log10 tol across the
{per} batches (the spread in the table is between seeds)""" + (
        ", and the last block sits at the upper bound on every seed" if last_at_bound else "") + f""".
`training_log` is what was sampled in the last {frac:.0%} of training (it includes the
exploration noise)."""])


def eval_batch(res: Res) -> str:
    d = res["eval-batch"]
    rows = d["rows"]
    ref = row(d["reference"], split="test")
    test = [r for r in rows if r["split"] == "test"]
    train = [r for r in rows if r["split"] == "train"]
    nfe = [r["nfe_mean"] for r in test]
    deltas = [r["delta_bits_per_dim_mean"] for r in test]
    max_err = max(abs(r["delta_error_mean"]) for r in train)
    tols = [r["log10_tol_mean"] for r in rows]
    sizes = [r["batch_size"] for r in rows]
    train_batch = d["regimes"][d["config"]["regime"]]["batch_size"]
    at_ref = row(test, batch_size=d["config"]["reference_batch_size"])
    test_err = max(abs(r["delta_error_mean"]) for r in test)
    all_deltas = [r["delta_bits_per_dim_mean"] for r in rows]
    return "\n\n".join([figure("eval-batch"), table(d, "eval-batch"), f"""\
Evaluating with the gates' tolerances (about 10^{sum(tols) / len(tols):.2f}) instead of {eval_tol(res)} costs \
{rng(nfe, 1)} instead of
{ref['nfe_mean']:.1f} forward NFE per test batch ({min(nfe) / ref['nfe_mean']:.2f}x-{max(nfe) / ref['nfe_mean']:.2f}x) \
and changes test bits/dim by at most
{max(deltas):.3f} ({apct(max(deltas) / ref['bits_per_dim_mean'], 1)}), test error """ + (
        "not at all" if test_err == 0 else f"by at most {test_err:.3f}") + f""" and training-set error by at most \
{max_err:.4f}, at every batch size from {min(sizes)} to the whole training set ({max(sizes) / train_batch:.1f}x the
training batch). The paper finds the metrics get worse at batch sizes several times the
training batch; here they do not, because the gates' choice hardly depends on the batch
([`tol-hist`](#tol-hist)). The differences of {rng(all_deltas, 4, ' to ')} are of the size of the Hutchinson
estimator's noise (the reference shares its noise only with the batch-{at_ref['batch_size']} row, whose difference
is {at_ref['delta_bits_per_dim_mean']:.4f})."""])


def _num_classes(res: Res) -> int | None:
    if "samples" not in res:
        return None
    s = res["samples"]
    return len(next(iter(s["grids"].values()))) // s["per_class"]


def samples(res: Res) -> str:
    d = res["samples"]
    info = row(d["rows"], model="infocnf")
    ccnf = row(d["rows"], model="ccnf")
    return "\n\n".join([figure("samples"), table(d, "samples"), f"""\
Samples at tol {sci(d['config']['tol'])} from the digits models are noisy strokes; a logistic-regression
classifier that scores {d['classifier_test_accuracy']:.3f} on the real test digits assigns \
{info['sample_accuracy_mean']:.0%} (InfoCNF) and
{ccnf['sample_accuracy_mean']:.0%} (CCNF) of them to the class they were conditioned on (chance \
{1 / required(_num_classes(res), "samples"):.0%}). The models are far
from the paper's sample quality at this size and training length; the class signal is there but weak."""])


def uncond(res: Res) -> str:
    d = res["uncond"]
    fixed, learned = row(d["rows"], policy="fixed"), row(d["rows"], policy="reinforce")
    ratios = [a / b for a, b in zip(per_seed(learned, "nfe"), per_seed(fixed, "nfe"), strict=True)]
    within = within_std(learned, fixed, "bits_per_dim")
    return "\n\n".join([figure("uncond"), table(d, "uncond"), f"""\
The paper's Fig. 4 effect holds: the learned tolerances train the unconditional CNF at
{d['nfe_ratio']:.2f}x the NFE of fixed {eval_tol(res)} (per seed {xs(ratios)}) with test bits/dim \
{apct(d['bits_per_dim_rel_diff'])} {'worse' if d['bits_per_dim_rel_diff'] > 0 else 'better'}""" + (
        " (within one std)." if within else ".")])


def reinforce_ablation(res: Res) -> str:
    d = res["reinforce-ablation"]
    rows = d["rows"]
    v = {r["variant"]: r for r in rows}
    ub = required(upper_bound(res), "reinforce-ablation")
    f12 = v["fixed 1e-2"]
    bounds = v["bounds (-8, -1)"]
    gamma0, lr = v["gamma 0"], v["gate lr 3e-2"]
    at_bound = sum(t >= ub - 1e-6 for t in per_seed(lr, "log10_tol_last"))
    n = len(d["seeds"])
    spreads = {k: r["log10_tol_last_std"] for k, r in v.items()}
    widest = max(spreads, key=lambda k: spreads[k])
    max_rel = max(abs(r["bits_per_dim_rel_diff_vs_fixed"]) for r in rows)
    err_changed = [r for r in rows if r["test_error_mean"] != d["reference"]["test_error_mean"]]
    err_note = ""
    if err_changed:
        err_note = " (except " + ", ".join(
            f"`{r['variant']}`, {r['test_error_mean']:.3f} vs {d['reference']['test_error_mean']:.3f}"
            + (", within one std" if within_std(r, d["reference"], "test_error") else "") for r in err_changed) + ")"
    regime = d["regimes"][d["config"]["regime"]]
    target = res["digits-table"]["config"]["targets"]["nfe_ratio"] if "digits-table" in res else None
    bench = ""
    lvf = {k: res[k] for k in ("learned_vs_fixed__init_mean-5", "learned_vs_fixed") if k in res}
    if lvf:
        bench = ("The gates' initial mean was chosen with `runs/bench_learned_tol.py` ([benchmarks](#benchmarks)): "
                 + "; ".join(f"initial mean {_init_mean(k, r)} gave {r['nfe_ratio']:.3f}x over "
                             f"{len(r['rows']['fixed']['seeds'])} seeds" for k, r in lvf.items())
                 + ", in that benchmark's setting.")
    return "\n\n".join([figure("reinforce-ablation"), table(d, "reinforce-ablation"), f"""\
Each variant changes one setting of the defaults; {n} seeds each, the same {regime['iterations']} small-batch
iterations; the fixed-{eval_tol(res)} reference is the `digits-table` arm ({d['reference']['nfe_mean']:.1f} NFE).""",
                        bullets([
        f"**The floor is the action bound.** Fixed {tol10(ub)} for every block, the cheapest policy inside the "
        f"default bounds, costs {f12['nfe_ratio_vs_fixed']:.3f}x. A policy that starts at tighter tolerances and has "
        f"to learn its way to {tol10(ub)} can only come near it"
        + (f", so the target of {target:.2f}x is essentially the bound itself." if target else "."),
        f"**Loosening the bound does not help.** With `bounds (-8, -1)` the seeds' final mean log10 tol spread "
        f"from {min(per_seed(bounds, 'log10_tol_last')):.2f} to {max(per_seed(bounds, 'log10_tol_last')):.2f}"
        + (" (the widest spread of any variant)" if widest == "bounds (-8, -1)" else "")
        + f": {bounds['nfe_ratio_vs_fixed']:.3f}x and {pct(bounds['bits_per_dim_rel_diff_vs_fixed'])} bits/dim. "
        "Loose tolerances also leak solver error into training ([`tol-integral`](#tol-integral) and the README's "
        f"*A trap*), which is why the default bound is {tol10(ub)}.",
        (f"**Credit assignment is a likely cause of slow or drifting gates.** Eq. 7's return-to-go gives the first "
        f"gate the noise "
        f"of every later block and of the final loss. With `gamma 0` each gate learns only from its own block's NFE "
        f"(the last one also from the loss): {gamma0['nfe_ratio_vs_fixed']:.3f}x, the gates ending at "
        f"{tol10(min(per_seed(gamma0, 'log10_tol_last')))} to {tol10(max(per_seed(gamma0, 'log10_tol_last')))} "
        f"(seed means). An entropy bonus (`entropy 1e-2`) gives {v['entropy 1e-2']['nfe_ratio_vs_fixed']:.3f}x. A "
        f"larger gate learning rate (`gate lr 3e-2`) reaches the bound on {at_bound} of {n} seeds and not on the "
        f"other{'s' if n - at_bound > 1 else ''} ({lr['nfe_ratio_vs_fixed']:.3f}x)."),
        f"**The baseline matters**: without the moving-average baseline, "
        f"{v['no baseline']['nfe_ratio_vs_fixed']:.3f}x.",
        bench,
        f"No variant changes test bits/dim by more than {apct(max_rel)}, or test error{err_note}.",
    ])])


def _init_mean(key: str, result: dict) -> str:
    """The gates' initial mean of a learned_vs_fixed benchmark: its ``--init-mean`` flag or file name."""
    for arg in result.get("reinforce_args", []):
        if arg.startswith("--init-mean="):
            return arg.split("=", 1)[1]
    return key.rsplit("init_mean", 1)[1] if "init_mean" in key else "(default)"


def policies(res: Res) -> str:
    d = res["policies"]
    p = {r["policy"]: r for r in d["rows"]}
    ub = required(upper_bound(res), "reinforce-ablation")
    ratio = {k: r["nfe_ratio_vs_fixed"] for k, r in p.items()}
    max_rel = max(abs(r["bits_per_dim_rel_diff_vs_fixed"]) for r in d["rows"])
    regime = d["regimes"][d["config"]["regime"]]
    td3_at_bound = all(t >= ub - 1e-6 for t in per_seed(p["td3"], "log10_tol_last"))
    f12 = row(res["reinforce-ablation"]["rows"], variant="fixed 1e-2")["nfe_ratio_vs_fixed"]
    front = sorted(res["frozen"]["front"], key=lambda r: r["tol"]) if "frozen" in res else []
    low = front[0]["tol"] if front else None
    tight = [r for r in front if "eval-batch" not in res or r["tol"] <= res["eval-batch"]["reference"][0]["tol"]]
    ppo_tols = per_seed(p["ppo"], "log10_tol_last")
    a2c = p["a2c"]
    a2c_tols = sorted(per_seed(a2c, "log10_tol_last"), reverse=True)
    a2c_low = [(t, n) for t, n in zip(per_seed(a2c, "log10_tol_last"), per_seed(a2c, "nfe"), strict=True)
               if low is not None and t <= math.log10(low) + 0.05]
    norm = p["a2c-normadv"]
    norm_bound = sum(t >= ub - 0.05 for t in per_seed(norm, "log10_tol_last"))
    norm_other = [t for t in per_seed(norm, "log10_tol_last") if t < ub - 0.05]
    blocks = required(num_blocks(res), "tol-hist")
    ranked = sorted((k for k in ratio if k != "fixed"), key=lambda k: ratio[k])
    name = {"reinforce": "REINFORCE", "ppo": "PPO", "sac": "SAC", "td3": "TD3", "a2c": "A2C"}
    name = {k: name.get(k, f"`{k}`") for k in ratio}
    return "\n\n".join([figure("policies"), table(d, "policies"), f"""\
InfoCNF co-trained with each policy, small batches, {regime['iterations']} iterations, {len(d['seeds'])} seeds; test \
metrics at {eval_tol(res)}. Every policy leaves test error and bits/dim unchanged (within {apct(max_rel)}); they \
differ only in what they save.""", bullets([
        f"**{name[ranked[0]]} ({ratio[ranked[0]]:.3f}x) and {name[ranked[1]]} ({ratio[ranked[1]]:.3f}x) save the "
        f"most**, then {name[ranked[2]]} and {name[ranked[3]]} ({ratio[ranked[2]]:.3f}x, {ratio[ranked[3]]:.3f}x)."
        + (f" TD3 ends at the upper bound {tol10(ub)} on every block and seed, i.e. it finds the cheapest point of the "
           f"action space, the {f12:.3f}x of fixed {tol10(ub)} ([`reinforce-ablation`](#reinforce-ablation)). "
           "SB3's TD3 adds no exploration noise by default; its deterministic actor moves straight to the bound."
           if td3_at_bound else ""),
        "**PPO and A2C pay for exploration.** Their Gaussian policies sample around the mean, and the NFE is convex "
        "in log10 tol" + (" ([`frozen`](#frozen) front: " + ", ".join(
            f"{r['nfe_mean']:.0f} NFE at {sci(r['tol'])}" for r in reversed(tight)) + ")" if tight else "")
        + f", so noise costs NFE even when the mean is loose. PPO ({ratio['ppo']:.3f}x) starts in the middle of the "
        f"bounds, tighter than the REINFORCE gates, and ended training between {tol10(min(ppo_tols))} and "
        f"{tol10(max(ppo_tols))} (seed means), far from the bound {tol10(ub)}; whether a longer budget would let it "
        "save more, we did not run.",
        f"**A2C needs batched, normalised updates.** Updating after every {blocks}-step episode on raw returns "
        f"(row `a2c`) its mean moved *toward tighter* tolerances on every seed (to "
        f"{', '.join(tol10(t) for t in a2c_tols if not any(t == lt for lt, _ in a2c_low))}"
        + (f" and, on {len(a2c_low)} seed, the lower bound {sci(low)} at {a2c_low[0][1]:.0f} NFE per iteration"
           if a2c_low and low is not None else "") + ")"
        + f": {ratio['a2c']:.3f}x. Below the lower bound the reward is flat (actions are clipped), so a mean that "
        "drifts there gets no signal back. With several episodes per update and advantages normalised per update "
        f"(`a2c-normadv`, the `agents.sb3` default for A2C) it saves like SAC: {ratio['a2c-normadv']:.3f}x, "
        f"{norm_bound} seeds ending at {tol10(ub)}"
        + (", the other" + ("s" if len(norm_other) > 1 else "") + " at " + ", ".join(tol10(t, 1) for t in norm_other)
           if norm_other else "") + ".",
    ])])


def frozen(res: Res) -> str:
    d = res["frozen"]
    p = {r["policy"]: r for r in d["rows"]}
    front = sorted(d["front"], key=lambda r: r["tol"])
    ref = row(front, tol=res["eval-batch"]["reference"][0]["tol"])
    flat = [r for r in front if abs(r["excess_bits_per_dim_mean"]) < 5e-5]
    steep = [r for r in front if abs(r["excess_bits_per_dim_mean"]) >= 5e-5]
    loosest = front[-1]
    low = math.log10(front[0]["tol"])
    td3_bound = all(t == math.log10(loosest["tol"]) for s in p["td3"]["per_seed"] for t in s["log10_tol_blocks"])
    sac = p["sac"]
    drifted = [(i, s) for i, s in enumerate(p["reinforce"]["per_seed"]) if min(s["log10_tol_blocks"]) <= low + 1e-6]
    not_bound = {k: sum(any(t < math.log10(loosest["tol"]) - 1e-6 for t in s["log10_tol_blocks"])
                        for s in p[k]["per_seed"]) for k in ("ppo", "a2c-normadv")}
    n = len(d["seeds"])
    a, b = front[-1], front[-2]  # the two loosest front points, between which SAC's NFE lies
    between = min(a["nfe_mean"], b["nfe_mean"]) <= sac["nfe_mean"] <= max(a["nfe_mean"], b["nfe_mean"])
    w = (sac["nfe_mean"] - a["nfe_mean"]) / (b["nfe_mean"] - a["nfe_mean"]) if between else 0.0
    on_front = a["excess_bits_per_dim_mean"] + w * (b["excess_bits_per_dim_mean"] - a["excess_bits_per_dim_mean"])
    below = between and sac["excess_bits_per_dim_mean"] < on_front
    below_std = on_front - sac["excess_bits_per_dim_mean"] <= max(sac["excess_bits_per_dim_std"],
                                                                   a["excess_bits_per_dim_std"])
    drift_text = ""
    if drifted:
        _i, s = drifted[0]
        block = s["log10_tol_blocks"].index(min(s["log10_tol_blocks"]))
        drift_text = (f", because on {len(drifted)} of {len(d['seeds'])} seeds the gate of block {block} drifted "
                      f"to the lower bound "
                      f"{sci(front[0]['tol'])} (`per_seed` in `frozen.json`), where the reward is flat, like A2C's in "
                      "[`policies`](#policies)")
    return "\n\n".join([figure("frozen"), table(d, "frozen"), f"""\
The flow is each seed's InfoCNF fixed-{eval_tol(res)} run of `digits-table`, frozen; each policy then
learns on it for {d['config']['iterations']} episodes with the co-training reward, and the test set (batch \
{d['config']['eval_batch_size']}) is
evaluated with its deterministic tolerances. "excess bits/dim" is bits/dim at those
tolerances minus bits/dim at {eval_tol(res)} on the same batches and Hutchinson noise.""", bullets([
        f"**The front is almost flat at this scale.** From {sci(flat[0]['tol'])} to {sci(flat[-1]['tol'])} bits/dim "
        "do not move in the fourth decimal; "
        + " and ".join(f"{sci(r['tol'])} costs {r['excess_bits_per_dim_mean']:+.4f}" for r in steep)
        + f" ({apct(loosest['excess_bits_per_dim_mean'] / ref['bits_per_dim_mean'])}) while the test NFE falls from "
        f"{front[0]['nfe_mean']:.0f} to {loosest['nfe_mean']:.0f}. On a trained digits flow the cheapest tolerance "
        f"allowed is nearly free, so the best a policy can do is find the upper bound {sci(loosest['tol'])}.",
        (f"TD3 finds it on every block and seed ({p['td3']['nfe_mean']:.1f} NFE, the fixed-{sci(loosest['tol'])} "
         "point). " if td3_bound else "")
        + f"SAC's deterministic tolerances average {tol10(sac['log10_tol_mean'])} (log10 "
        f"{sac['log10_tol_mean']:.2f}): {sac['nfe_mean']:.1f} NFE at {sac['excess_bits_per_dim_mean']:+.4f}"
        + (f", a hair below the front between the {sci(a['tol'])} and {sci(b['tol'])} points"
           + (", within one std" if below_std else "")
           + ": the only hint here that per-block choices beat one fixed tolerance" if below else "")
        + f". REINFORCE: {cell(p['reinforce'], 'nfe', 1)} NFE{drift_text}.",
        (f"PPO and `a2c-normadv` have not reached the bound on every block after {d['config']['iterations']} "
        f"episodes ({not_bound['ppo']} and {not_bound['a2c-normadv']} of {n} seeds short of it; "
        f"{p['ppo']['nfe_mean']:.1f} and {p['a2c-normadv']['nfe_mean']:.1f} NFE)."),
        ("No policy lies clearly below the front. The per-input gating the paper motivates would show up as points "
        "below it; on digits at this width we do not see it."),
    ])])


def speed(res: Res) -> str:
    d = res["speed"]
    cfg, t = d["config"], d["targets"]
    regime = d["regimes"][cfg["regime"]]
    fixed = row(d["rows"], arm="fixed")
    small = [r for r in d["rows"] if r.get("regime", cfg["regime"]) == cfg["regime"]]
    lines = ["| arm | train NFE / it | vs fixed | train wall vs fixed | test bits/dim | vs fixed | test NFE @1e-5 | "
             "vs fixed |", "|" + " --- |" * 8]
    for r in small:
        lines.append(f"| {r['arm']} | {cell(r, 'nfe', 1)} | {r['nfe_ratio']:.3f}x | {r['wall_ratio']:.3f}x | "
                     f"{cell(r, 'bits_per_dim', 4)} | {pct(r['bpd_ratio'] - 1)} | {cell(r, 'test_nfe', 1)} | "
                     f"{r['test_nfe_ratio']:.3f}x |")

    def verdict(met: bool) -> str:
        return "**met**" if met else "**not met**"

    th = t["thresholds"]
    sweep = ", ".join(f"{r['reg_weight']:g}: bits/dim {pct(r['bpd_ratio'] - 1)}, test NFE {r['test_nfe_ratio']:.2f}x"
                      for r in d["reg_sweep"])
    items = []
    if "warm" in t:
        w = t["warm"]
        items.append(f"Warm start alone: training forward NFE {w['nfe_forward_ratio']:.3f}x and test-pass NFE "
                     f"{w['test_nfe_ratio']:.3f}x of the heuristic start, bits/dim {pct(w['bpd_ratio'] - 1, 3)} "
                     f"(target: both at most {th['warm_nfe_forward_ratio']}x, bits/dim within "
                     f"{apct(th['warm_bpd_tol'], 1)}): {verdict(w['met'])}.")
    if "regularised" in t:
        r = t["regularised"]
        items.append(f"RNODE regularizers (weight {d['reg_weight']:g}): test NFE at 1e-5 {r['test_nfe_ratio']:.3f}x "
                     f"of the unregularised model (target at most {th['regularised_test_nfe_ratio']}x): "
                     f"{verdict(r['met'])}. The weight is the largest of the sweep on seed {d['reg_sweep'][0]['seed']} "
                     f"whose bits/dim stayed within {apct(cfg['reg_bpd_tol'], 0)} ({sweep}).")
    if "combined" in t:
        c = t["combined"]
        items.append(f"Warm start + regularizers + REINFORCE: training NFE {c['nfe_ratio']:.3f}x, wall time "
                     f"{c['wall_ratio']:.3f}x, bits/dim {pct(c['bpd_ratio'] - 1)} (target: at most "
                     f"{th['combined_nfe_ratio']}x and {th['combined_wall_ratio']}x, bits/dim within "
                     f"{apct(th['combined_bpd_tol'], 0)}): {verdict(c['met'])}.")
    if "regularised" in t and "combined" in t and "warm" in t:
        r, c = row(d["rows"], arm="regularised"), t["combined"]
        items.append(f"The RNODE regularizers alone save no training NFE here ({r['nfe_ratio']:.3f}x): the combined "
                     f"arm's {c['nfe_ratio']:.3f}x is the warm start's ({t['warm']['nfe_forward_ratio']:.3f}x forward) "
                     f"and the learned tolerances' ({row(d['rows'], arm='learned')['nfe_ratio']:.3f}x) together. Its "
                     f"test pass at 1e-5 starts from steps accepted at the looser learned tolerances, rescaled, so it "
                     f"saves less there than the warm start alone.")
    if any(r["arm"] == "error_reg" for r in d["rows"]):
        e = row(d["rows"], arm="error_reg")
        items.append(f"The solver-error regularizer (Pal et al. 2021, weight {cfg['error_weight']:g}) costs its probe "
                     f"steps: training NFE {e['nfe_ratio']:.3f}x, test NFE {e['test_nfe_ratio']:.3f}x, bits/dim "
                     f"{pct(e['bpd_ratio'] - 1)}; its probe evaluations are part of the training NFE.")
    parts = [figure("speed"), f"""\
InfoCNF on digits, batch {regime['batch_size']}, {regime['iterations']} iterations, {len(d['seeds'])} seeds; the \
arms of a seed trained side by side. Ratios are per seed against the fixed arm of the same seed, then averaged; \
training wall time is that of the training iterations (periodic evaluation off); test metrics at {eval_tol(res)} \
({fixed['test_nfe_mean']:.1f} NFE per test batch for the fixed arm).""", "\n".join(lines), bullets(items)]
    adjoint = [r for r in d["rows"] if r.get("regime") == "adjoint"]
    if adjoint:
        parts.append(_speed_adjoint(d, adjoint, verdict))
    return "\n\n".join(parts)


def _speed_adjoint(d: dict, rows: list[dict], verdict: Callable[[bool], str]) -> str:
    """The speed study's adjoint regime: the levers on the CIFAR10 ids' training path."""
    t, th = d["targets"], d["targets"]["thresholds"]
    lines = ["| arm | train NFE / it | backward NFE vs full norm | train wall vs full norm | test bits/dim | "
             "vs full norm | test NFE @1e-5 |", "|" + " --- |" * 7]
    for r in rows:
        lines.append(f"| {r['arm']} | {cell(r, 'nfe', 1)} | {r['nfe_backward_ratio']:.3f}x | {r['wall_ratio']:.3f}x | "
                     f"{cell(r, 'bits_per_dim', 4)} | {pct(r['bpd_ratio'] - 1, 3)} | {cell(r, 'test_nfe', 1)} |")
    items = []
    if "seminorm" in t:
        m = t["seminorm"]
        items.append(f"Seminorm adjoint: backward NFE {m['nfe_backward_ratio']:.3f}x of the full norm's, bits/dim "
                     f"{pct(m['bpd_ratio'] - 1, 3)} (target: at most {th['seminorm_nfe_backward_ratio']}x, bits/dim "
                     f"within {apct(th['seminorm_bpd_tol'], 1)}): {verdict(m['met'])}.")
    if "adjoint_combined" in t:
        c = t["adjoint_combined"]
        items.append(f"Seminorm + warm start + REINFORCE: training wall time {c['wall_ratio']:.3f}x of fixed 1e-5 with "
                     f"the full-norm adjoint, NFE {c['nfe_ratio']:.3f}x, bits/dim {pct(c['bpd_ratio'] - 1)} (target: "
                     f"at most {th['adjoint_combined_wall_ratio']}x, bits/dim within "
                     f"{apct(th['adjoint_combined_bpd_tol'], 0)}): {verdict(c['met'])}.")
    return f"""\
**The adjoint regime**: the same training with the adjoint method and the authors' recipe (the CIFAR10 \
ids' model choices at digits size: {', '.join(f'{k}={v}' for k, v in d['config']['adjoint_env'].items())}); \
ratios against the full-norm adjoint at fixed 1e-5 of the same seed.

""" + "\n".join(lines) + "\n\n" + bullets(items)


def benchmark(res: Res) -> str:
    d = res["benchmark"]
    th = d["targets"]["thresholds"]

    def action(a: dict) -> str:
        first = "solver's start" if a["first_step"] is None else f"first step {a['first_step']:.3g} of the span"
        return f"tol {a['tol']:.0e}, {first}"

    lines = ["| task | action | NFE / block @1e-5 | loosest action: NFE, error | best constant | its reward | "
             "oracle reward | gap / best |", "|" + " --- |" * 8]
    for t in d["tasks"]:
        loose = t["loosest_action"]
        lines.append(f"| {t['task']} | {t['action_mode']} | {t['nfe_per_block_at_1e-5']:.1f} | "
                     f"{loose['nfe']:.1f}, {loose['error']:.4f} | {action(t['best_constant_action'])} | "
                     f"{t['best_constant_reward']:.2f} | {t['oracle_reward']:.2f} | {100 * t['gap_fraction']:.1f}% |")
    with_agents = {(t["task"], t["action_mode"]) for t in d["tasks"] if t["agents"]}
    verdicts = [f"{t['task']}, {t['action_mode']}: oracle over best constant {100 * t['gap_fraction']:.1f}% of its "
                f"reward (target {100 * th['gap_fraction']:.0f}%: {'met' if t['gap_met'] else 'not met'}); "
                + (f"best agent closes {cell(t, 'best_gap_closed', 2)} of the gap (target {th['gap_closed']}: "
                   f"{'met' if t['agent_met'] else 'not met'})." if (t["task"], t["action_mode"]) in with_agents
                   else "baselines only, no agents run on it.") for t in d["targets"]["tasks"]]
    for t in d["tasks"]:
        sweep = ", ".join(f"{w['error_weight']:g}: {100 * w['gap_fraction']:.1f}%" for w in t["weight_sweep"])
        verdicts.append(f"{t['task']}, {t['action_mode']}: the oracle's gain over the best constant at other error "
                        f"weights (same grid; weight: gain) {sweep}.")
    c = d["cotrain"][0]
    ct = d["targets"]["cotrain"]
    cfg = d["config"]
    regime = d["regimes"][cfg["cotrain_regime"]]
    verdicts.append(
        f"Co-training InfoCNF on digits (batch {regime['batch_size']}, {regime['iterations']} iterations, "
        f"{len(c['seeds'])} seeds), REINFORCE with bounds {tuple(cfg['cotrain_tol_bounds'])}, the first-step lever "
        f"and the two-sided accuracy term (weight {cfg['cotrain_gap_weight']:g}, a 1e-5 reference every "
        f"{cfg['cotrain_gap_every']} iteration(s)): training NFE {c['nfe_ratio']:.3f}x fixed 1e-5 (the reference "
        f"solves, reported apart, cost another {c['reference_nfe_ratio']:.3f}x), test bits/dim "
        f"{pct(c['bpd_ratio'] - 1)} (target at most {th['cotrain_nfe_ratio']}x within "
        f"{apct(th['cotrain_bpd_tol'], 0)}: {'met' if ct['met'] else 'not met'}). Over the last 10% of training "
        f"the policy chose log10 tolerances of {nums([p['log10_tol_last'] for p in c['per_seed']])} and log10 "
        f"first steps of {nums([p['log10_first_step_last'] for p in c['per_seed']])} (per seed, means over blocks), "
        f"at a loss gap to the reference of {nums([p['abs_loss_gap_last'] for p in c['per_seed']], 4)} bits/dim.")
    w = d["tasks"][0]
    return "\n\n".join([figure("benchmark"), f"""\
Frozen flows (`CNF-Frozen-*`), {len(d['seeds'])} seeds per agent, each agent trained for {cfg['agent_episodes']} \
episodes and scored by its deterministic policy over the task's pool of {len(w['oracle_actions'])} episodes. Reward \
per episode: -{w['alpha']:g} x NFE - {w['error_weight']:g} x error (nats, against a cached 1e-8 solve). The best \
constant is the best single grid action, the oracle each episode's best grid action in hindsight; gap closed = \
(agent - best constant) / (oracle - best constant), above 1 where an agent's continuous action beats the grid.""",
                         "\n".join(lines), table(d, "benchmark"), bullets(verdicts)])


def leaderboard(res: Res) -> str:
    d = res["leaderboard"]
    t = d["tasks"][0]
    r = t["reward"]
    return _leaderboard(d, "leaderboard", f"""\
Classical ODE tasks (`ODE-*`, [environment](environment.md#the-classical-ode-tasks)): each episode one instance \
solved in {t['segments']} segments, reward -{r['alpha']:g} x NFE per segment - {r['error_weight']:g} per decade \
of relative error above {r['error_target']:g}.""")


def leaderboard_cnf(res: Res) -> str:
    d = res["leaderboard-cnf"]
    t = d["tasks"][0]
    r = t["reward"]
    cost = (f"{r['error_weight']:g} per decade of error above {r['error_target']:g} nats" if r["error_form"] == "target"
            else f"{r['error_weight']:g} x error (nats)")
    return _leaderboard(d, "leaderboard-cnf", f"""\
The CNF task with room (`CNF-Frozen-Mixed-v0`, [environment](environment.md#the-frozen-flow-benchmark)): \
each episode a small batch from one of {len(t['families'])} toy densities, solved by that density's frozen flow of \
{t['segments']} stacked blocks (one decision per block); error = mean |log p(x) - log p_ref(x)| against a 1e-8 \
solve; reward -{r['alpha']:g} x NFE per block - {cost}. Flows trained until the loss plateaus \
(iterations per density: {', '.join(f"{k} {v}" for k, v in t.get('trained_steps', {}).items())}).""")


def _leaderboard(d: dict, study: str, task_text: str) -> str:
    th = d["targets"]["thresholds"]
    cfg = d["config"]
    lines = ["| task | pools (train / test) | best constant (log10 tol): reward | best schedule | oracle | "
             "room over the schedule | room over the constant |", "|" + " --- |" * 7]
    for t in d["tasks"]:
        lines.append(f"| {t['task']} | {t['pool_sizes']['train']} / {t['pool_sizes']['test']} | "
                     f"{t['best_constant_log10_tol']:g}: {t['best_constant_reward']:.2f} | "
                     f"{t['best_schedule_reward']:.2f} ({', '.join(f'{s:g}' for s in t['best_schedule'])}) | "
                     f"{t['oracle_reward']:.2f} | {100 * t['gap_fraction']:.1f}% | "
                     f"{100 * t['gap_fraction_vs_constant']:.1f}% |")
    verdicts = []
    for v in d["targets"]["tasks"]:
        saving = v["best_nfe_saving_at_equal_error"]
        met_saving = saving is not None and saving >= th["nfe_saving_at_equal_error"]
        families = ("no worse than the best constant on every family" if v["best_no_worse_on_every_family"]
                    else "worse than the best constant on at least one family (table below)")
        verdicts.append(
            f"{v['task']}: room {100 * v['gap_fraction']:.1f}% of the best schedule's reward (target "
            f"{100 * th['gap_fraction']:.0f}%: {'met' if v['gap_met'] else 'not met'}); the best agent, "
            f"{v['best_agent']}, closes {cell(v, 'best_gap_closed', 2)} of it (target {th['gap_closed']}: "
            f"{'met' if v['gap_closed_met'] else 'not met'}), is {families}, and saves "
            f"{'n/a' if saving is None else pct(saving)} NFE against the cheapest constant at least as accurate "
            f"on average (target {100 * th['nfe_saving_at_equal_error']:.0f}%: {'met' if met_saving else 'not met'}). "
            f"Agents beating the best constant on the test pool: "
            f"{', '.join(v['agents_beating_best_constant']) or 'none'}.")
    per_family = []
    for t in d["tasks"]:
        names = sorted(t["best_constant_per_family"])
        per_family += [f"| {t['task']} | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
        shown = [("best_constant", t["best_constant_per_family"])] + [
            (row["agent"], row["per_family"]) for row in d["rows"]
            if row["task"] == t["task"] and "per_family" in row and row["agent"] != "best_constant"]
        for name, fam in shown:
            per_family.append(f"| {name} | " + " | ".join(
                f"{fam[f]['reward']:.1f} ({fam[f]['nfe']:.0f} NFE, {fam[f]['error']:.1e})" for f in names) + " |")
    return "\n\n".join([figure(study), f"""{task_text} Baselines chosen on the training pool; every figure on the \
held-out test pool; `pi_controller` is torchode's Dormand-Prince with a PI step-size controller (PI.3.4) at its own \
best constant tolerance, where present. Agents: {', '.join(cfg['agents'])}, {len(d['seeds'])} seeds, \
{cfg['agent_episodes']} training episodes each, flags from `agents/hyperparams/benchmark.json` (not tuned). gap \
closed = (row - best schedule) / (oracle - best schedule).""", "\n".join(lines), table(d, study), bullets(verdicts),
                         "Per family (density), on the test pool: mean reward (NFE per episode, mean error); "
                         "agents pooled over seeds.", "\n".join(per_family)])


def benchmarks(res: Res) -> str:
    parts = []
    lvf = [(k, res[k]) for k in ("learned_vs_fixed__init_mean-5", "learned_vs_fixed") if k in res]
    if lvf:
        lines = [("| gate initial mean | fixed NFE / it | learned NFE / it | NFE ratio | fixed bits/dim | "
                 "learned bits/dim | learned final log10 tol |"), "|" + " --- |" * 7]
        for key, r in lvf:
            f, learned = r["rows"]["fixed"], r["rows"]["reinforce"]
            lines.append(f"| {_init_mean(key, r)} | {cell(f, 'nfe', 1)} | {cell(learned, 'nfe', 1)} | "
                         f"{r['nfe_ratio']:.3f} | {cell(f, 'bits_per_dim', 4)} | {cell(learned, 'bits_per_dim', 4)} | "
                         f"{learned['mean_log10_tol_last']:.2f} |")
        r0 = lvf[0][1]
        parts.append(f"""\
**Learned vs fixed tolerance** (`python -m runs.bench_learned_tol`, written to
`runs/results/learned_vs_fixed*.json`): {len(r0['rows']['fixed']['seeds'])} seeds x {r0['iterations']} iterations \
of `{r0['env']}`, training NFE per
iteration (forward + backward, averaged over training) and test bits/dim at {eval_tol(res)}. These runs chose
the gates' initial mean; the `init_mean-5` file predates `--seed` also setting the flow's initial
weights, so its fixed arm differs from the other's.

""" + "\n".join(lines))
    if "spirals" in res:
        s = res["spirals"]
        c = s["config"]
        cols = [("model", "model", 0), ("recon MSE", "recon_mse", 3), ("extrapolation MSE", "extrap_mse", 2),
                ("direction error", "direction_error", 2), ("test NFE", "nfe", 1)]
        lines = ["| " + " | ".join(h for h, _, _ in cols) + " |", "|" + " --- |" * len(cols)]
        lines += ["| " + " | ".join(cell(r, k, dg) if f"{k}_mean" in r or k == "model" else "" for _, k, dg in cols)
                  + " |" for r in s["rows"]]
        base, part = row(s["rows"], model="latent_ode"), row(s["rows"], model="latent_ode_partitioned")
        better = part["extrap_mse_mean"] < base["extrap_mse_mean"]
        parts.append(f"""\
**Spirals, Section 4.6** (`python -m runs.spirals`, `runs/results/spirals.json`,
[figure]({IMAGES}/spirals.png)): the LatentODE and its partitioned latent code, {len(c['seeds'])} seeds x
{c['iterations_per_run']} Adam steps at learning rate {c['lr']:g} ({c['epochs']} epochs of batch {c['batch_size']} \
over {c['num_train']:,} spirals), trained at tolerance {sci(c['train_tol'])}, evaluated at {sci(c['eval_tol'])}
on {c['num_test']:,} test spirals against the noise-free ground truth (extrapolation: the next
{c['extrap_steps']} steps).

""" + "\n".join(lines) + "\n\n" + (
            "The partitioned model extrapolates better, as in the paper." if better else
            "The paper's better extrapolation with the partitioned code is not reproduced at this scale "
            "(the spread over seeds is as large as the means)."
            if part["extrap_mse_std"] > abs(part["extrap_mse_mean"] - base["extrap_mse_mean"]) else
            "The paper's better extrapolation with the partitioned code is not reproduced at this scale."))
    if "spirals_ab_ceiling" in res:
        g = res["spirals_ab_ceiling"]
        room_a = 100 * (1 - g["a_map_error"] / g["a_prior_mean_error"])
        room_b = 100 * (1 - g["b_map_error"] / g["b_prior_mean_error"])
        model = ""
        if "spirals" in res:
            model = " " + _spirals_head(row(res["spirals"]["rows"], model="latent_ode_partitioned"))
        parts.append(f"""\
**How much of (a, b) a window holds** (`python -m runs.spirals_ab_ceiling`, \
`runs/results/spirals_ab_ceiling.json`): on {g['num_spirals']} test windows of {g['window']} noisy steps \
(noise {g['noise_std']}), the MAP estimate under the Appendix E.1 prior, given the generating family, the true \
direction and the best window start (found within 5 steps for {100 * g['start_within_5_steps']:.1f}% of the \
windows), errs by {g['a_map_error']:.4f} in a and {g['b_map_error']:.4f} in b (mean absolute error), against \
{g['a_prior_mean_error']:.4f} and {g['b_prior_mean_error']:.4f} for the prior means. So a is close to \
unidentifiable from one window (at best {room_a:.0f}% below the prior mean's error), while b could be read \
{room_b:.0f}% better than the prior mean.{model}""")
    if "bench_env" in res:
        b = res["bench_env"]
        parts.append(f"""\
**Environment overhead** (`python -m runs.bench_env --json runs/results/bench_env.json`): a training iteration \
of `{b['env_id']}` at tolerance {sci(b['tol'])} through the environment takes {b['ratio']:.3f}x the time of the \
same iteration through a plain block loop ({b['env_s_per_iter']:.3f} s vs {b['plain_s_per_iter']:.3f} s, \
median of {b['iterations']}; same NFE on both sides: {'yes' if b['same_nfe'] else 'no'}).""")
    if "bench_flow" in res:
        b = res["bench_flow"]
        st = b["settings"]
        ratios = [c["fwdbwd_ms_per_nfe_ours"] / c["fwdbwd_ms_per_nfe_minimal"] for c in b["block_cost"]]
        lines = ["| arch | tol | forward NFE | backward NFE | bits/dim | forward NFE, warm start | "
                 "bits/dim, warm start |", "|" + " --- |" * 7]
        for p in b["tolerance_sweep"]:
            lines.append(f"| {p['arch']} | {sci(p['tol'])} | {p['nfe_forward']} | {p['nfe_backward']} | "
                         f"{p['bits_per_dim']:.4f} | {p['nfe_forward_warm']} | {p['bits_per_dim_warm']:.4f} |")
        parts.append(f"""\
**NFE against the tolerance, and the cost of one evaluation** (`python -m runs.bench_flow --json \
runs/results/bench_flow.json`): our CNF block costs {rng(ratios, 2)}x a minimal hand-written torchdiffeq CNF per \
function evaluation (forward + backward, {len(ratios)} cases). One training iteration of small digits flows after \
{st['train_steps']} Adam steps at {sci(st['train_tol'])}, batch {st['batch']}, per tolerance, with the \
initial-step heuristic and warm-started:

""" + "\n".join(lines))
    if "bench_backend" in res:
        b = res["bench_backend"]
        lines = ["| backend | tol | train s / pass | forward NFE | backward NFE | ms per NFE | bits/dim gap |",
                 "|" + " --- |" * 7]
        for p in b["points"]:
            if p.get("train_s") is None:
                continue
            lines.append(f"| {p['backend']} | {sci(p['tol'])} | {p['train_s']:.3f} | {p['nfe_forward']} | "
                         f"{p['nfe_backward']} | {1e3 * p['s_per_nfe']:.2f} | {p['bpd_gap']:.1e} |")
        parts.append(f"""\
**ODE backends** (`python -m runs.bench_backend`, `runs/results/bench_backend.json`): the digits InfoCNF flow, \
one training pass (forward + backward) per backend, median over repeats, {b['machine']['threads']} thread(s). \
The bits/dim gap is against torchdiffeq at 1e-5. `torch.compile` of the dynamics cannot run a training pass \
(the divergence's double backward), so it has no row.

""" + "\n".join(lines))
    if "bench_cifar" in res:
        b = res["bench_cifar"]
        arms, ratios = b["arms"], b["ratios_to_ffjord"]
        lines = ["| arm | forward + backward NFE | iteration s (median) | vs FFJORD (min, median) | eval s (median) | "
                 "eval vs FFJORD (median) |", "|" + " --- |" * 6]
        for name, a in arms.items():
            r = ratios.get(name)
            vs = f"{r['iteration']['min']:.2f}x, {r['iteration']['median']:.2f}x" if r else "1"
            eval_vs = f"{r['eval']['median']:.2f}x" if r else "1"
            lines.append(f"| {name} | {a['nfe_forward_median']:.0f} + {a['nfe_backward_median']:.0f} | "
                         f"{a['iteration_s_median']:.2f} | {vs} | {a['eval_s_median']:.2f} | {eval_vs} |")
        warm = ratios["seminorm_warm"]["iteration"]
        semi = arms["seminorm"]["nfe_backward_median"] / arms["full"]["nfe_backward_median"]
        extra = arms["full"]["nfe_backward_median"] - arms["ffjord"]["nfe_backward_median"]
        parts.append(f"""\
**The adjoint path beside FFJORD** (`python -m runs.bench_cifar`, `runs/results/bench_cifar.json`): the \
`{b['env_id']}` model ({b['num_blocks']} blocks, adjoint, learned end times) on CIFAR-shaped random data, batch \
{b['batch']}, {b['device']}, {b['threads']} thread(s), after {b['train_iterations']} Adam steps at \
{sci(b['train_tol'])}; one training iteration and one evaluation pass per arm at {sci(b['tol'])}, interleaved over \
{b['rounds']} rounds, against `ffjord`, a minimal torchdiffeq multiscale CNF with the same networks and noise \
(full adjoint norm, initial-step heuristic, fixed end times). Every lever this benchmark can measure on \
(seminorm + warm start): an iteration {warm['min']:.2f}x (min) / {warm['median']:.2f}x (median) of FFJORD's time \
(target for a trained model: at most 0.5x). The seminorm alone takes {semi:.2f}x the full norm's backward \
evaluations here, and the learned end times cost {extra:.0f} adjoint evaluations over FFJORD's for \
{b['num_blocks']} blocks (one per block); the machine's load average was {b['load_avg']:.1f}, so single times are \
noisy. Random data and {b['train_iterations']} steps leave the dynamics \
close to their initialisation, where a warm-started block needs few steps, so these are not a trained flow's \
ratios; the GPU run (`--device cuda --batch 900`, more `--train-iterations`) is still to be made.

""" + "\n".join(lines))
    parts.append("""\
**Not quoted here**: `python -m runs.bench_gpu` prints its figures but commits no result file. The CIFAR10 \
benchmark (`python -m runs.bench_gpu --synthetic`) and the Table 1/2
recipes in `runs/gpu_recipes.md` have run on CPU only, on tiny settings and fake data (in the
tests), so their GPU cost is unknown: the benchmark's `projected_hours_400_epochs_at_this_speed`
is the number to measure first.""")
    return "\n\n".join(parts)


#: (anchor, title, section, the JSON files it needs), in page order.
SECTIONS: list[tuple[str, str, Callable[[Res], str], tuple[str, ...]]] = [
    ("digits-table", "Tables 1-2 analogue", digits_table, ("digits-table", "eval-batch")),
    ("latent-probe", "Where the class sits in z, and why InfoCNF's error lags", latent_probe, ("latent-probe",)),
    ("beta", "InfoCNF vs CCNF as the supervision weighs as on CIFAR10", beta, ("beta",)),
    ("curves", "Training curves, Fig. 3 analogue", curves, ("curves",)),
    ("tol-integral", "Solver error vs tolerance, Fig. 2a analogue", tol_integral, ("tol-integral",)),
    ("tol-hist", "Learned tolerances on train vs test, Fig. 2b analogue", tol_hist, ("tol-hist",)),
    ("eval-batch", "Evaluating with the learned tolerances, Appendix D analogue", eval_batch, ("eval-batch",)),
    ("samples", "Class-conditional samples, Fig. 7 analogue", samples, ("samples",)),
    ("uncond", "Unconditional CNF with vs without learned tolerances, Fig. 4 analogue", uncond, ("uncond",)),
    ("reinforce-ablation", "Why REINFORCE stops short of the target with small batches", reinforce_ablation,
     ("reinforce-ablation",)),
    ("policies", "Which agent should choose the tolerances?", policies, ("policies", "reinforce-ablation")),
    ("frozen", "Policies on a frozen flow against the fixed-tolerance front", frozen, ("frozen", "eval-batch")),
    ("speed", "Faster than the paper: warm starts, easier dynamics, learned tolerances", speed, ("speed",)),
    ("benchmark", "A tolerance benchmark worth learning: frozen flows and co-training", benchmark, ("benchmark",)),
    ("leaderboard", "Tolerance learning with room: classical ODE tasks, held-out scoring", leaderboard,
     ("leaderboard",)),
    ("leaderboard-cnf", "Tolerance learning with room on frozen CNFs, held-out scoring", leaderboard_cnf,
     ("leaderboard-cnf",)),
    ("benchmarks", "Benchmarks", benchmarks, ()),
]


def load(results: Path = RESULTS) -> Res:
    """Every ``*.json`` in ``results``, by file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(results).glob("*.json"))}


def render(results: Path = RESULTS) -> str:
    """The whole page, from the JSON files in ``results``."""
    res = load(results)
    present = [(a, t, f) for a, t, f, needs in SECTIONS if all(n in res for n in needs)]
    head = [
        "# Results: does what the paper claims hold? (digits, CPU)",
        "<!-- Generated by `python -m runs.docs` from runs/results/*.json. Edit runs/docs.py, not this file. -->",
    ]
    if "digits-table" in res:
        head.append(intro(res))
    head.append(bullets([f"[{title}](#{anchor})" for anchor, title, _ in present]))
    body = [f'<a id="{anchor}"></a>\n## {title}' + (f" (`{anchor}`)" if anchor in res else "") + f"\n\n{section(res)}"
            for anchor, title, section in present]
    return "\n\n".join(head + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the STUDY.json files")
    parser.add_argument("--out", type=Path, default=OUT, help="the page to write")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if --out differs from the generated page")
    mode.add_argument("--stdout", action="store_true", help="print the page instead of writing it")
    args = parser.parse_args(argv)
    text = render(args.results)
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run `python -m runs.docs`", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
