"""docs/results.md, generated from the result files in runs/results/.

    python -m runs.docs              # (re)write docs/results.md
    python -m runs.docs --check      # exit 1 if docs/results.md differs from what the JSON gives
    python -m runs.docs --stdout     # print it instead

Every number on the generated page is formatted from a field of a committed JSON file (the
tables by :mod:`runs.tables`, the prose by each study module's ``section``), so no figure can
drift from the results it describes: change a result, rerun this command, commit both.
A study whose JSON is absent is left out, and so is any sentence that needs it.

This module is the page: its skeleton (head, introduction, contents, the sections in page
order, see :func:`sections`), the formatters and the facts several sections share, and the
benchmarks section (from ``runs/results/bench_*.json``). Each study's own section, with its
title, the files it needs and its place on the page, is in its module in ``runs/studies/``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agents.cli import command_parser
from runs.studies import MODULES, study_module
from runs.tables import cell

RESULTS = Path("runs/results")
OUT = Path("docs/results.md")
#: Where the generated page's image links point to, relative to ``OUT``.
IMAGES = "../runs/results"

Res = dict[str, Any]

T = TypeVar("T")


# ----------------------------------------------------------------------------- formatting


def pct(value: float, digits: int = 2) -> str:
    """A relative difference in percent, with its sign: ``+1.85%`` (``+0.00%`` where it rounds to zero)."""
    percent = 100 * value
    return f"{percent if round(percent, digits) else 0.0:+.{digits}f}%"


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


def verdict(met: bool) -> str:
    """A target's verdict, in bold."""
    return "**met**" if met else "**not met**"


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


def _share(ratio: float) -> str:
    return "half" if ratio == 0.5 else f"{ratio:.0%}"


def _num_classes(res: Res) -> int | None:
    if "samples" not in res:
        return None
    s = res["samples"]
    return len(next(iter(s["grids"].values()))) // s["per_class"]


def _init_mean(key: str, result: dict) -> str:
    """The gates' initial mean of a learned_vs_fixed benchmark: its ``--init-mean`` flag or file name."""
    for arg in result.get("reinforce_args", []):
        if arg.startswith("--init-mean="):
            return arg.split("=", 1)[1]
    return key.rsplit("init_mean", 1)[1] if "init_mean" in key else "(default)"


# ----------------------------------------------------------------------------- page


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
ratios.

""" + "\n".join(lines))
    parts.append("""\
**Not quoted here**: `python -m runs.bench_gpu` (the CIFAR10 benchmark, its \
`projected_hours_400_epochs_at_this_speed`) and the Table 1/2 recipes in `runs/gpu_recipes.md` commit no \
result file, so this page, which quotes committed result files only, holds no GPU figure.""")
    return "\n\n".join(parts)


#: The benchmarks section (:func:`benchmarks`, from the ``bench_*`` files): its place on the page
#: among the studies' ``PAGE_ORDER`` (last).
BENCHMARKS_PAGE_ORDER = 1000

Section = tuple[str, str, Callable[[Res], str], tuple[str, ...]]


def sections() -> list[Section]:
    """(anchor, title, section, the JSON files it needs) of every section, in page order.

    A study's section comes from its module (``TITLE``, ``section``, ``NEEDS``, ``PAGE_ORDER``;
    see :mod:`runs.studies`), anchored at the study's name; the benchmarks section is this
    module's. Sections go in ascending page order, which must be unique.
    """
    entries: list[tuple[int, Section]] = [(BENCHMARKS_PAGE_ORDER, ("benchmarks", "Benchmarks", benchmarks, ()))]
    for study in MODULES:
        m = study_module(study)
        entries.append((m.PAGE_ORDER, (study, m.TITLE, m.section, tuple(m.NEEDS))))
    orders = [order for order, _ in entries]
    if len(set(orders)) != len(orders):
        clash = sorted({f"{s[0]} ({o})" for o, s in entries if orders.count(o) > 1})
        raise ValueError(f"sections share a PAGE_ORDER: {', '.join(clash)}")
    return [section for _, section in sorted(entries, key=lambda e: e[0])]


def load(results: Path = RESULTS) -> Res:
    """Every ``*.json`` in ``results``, by file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(results).glob("*.json"))}


def render(results: Path = RESULTS) -> str:
    """The whole page, from the JSON files in ``results``."""
    res = load(results)
    present = [(a, t, f) for a, t, f, needs in sections() if all(n in res for n in needs)]
    head = [
        "# Results: does what the paper claims hold? (digits, CPU)",
        "<!-- Generated by `python -m runs.docs` from runs/results/*.json. Edit the study modules "
        "(runs/studies/) or runs/docs.py, not this file. -->",
    ]
    if "digits-table" in res:
        head.append(intro(res))
    head.append(bullets([f"[{title}](#{anchor})" for anchor, title, _ in present]))
    body = [f'<a id="{anchor}"></a>\n## {title}' + (f" (`{anchor}`)" if anchor in res else "") + f"\n\n{section(res)}"
            for anchor, title, section in present]
    return "\n\n".join(head + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("runs.docs", __doc__.split("\n\n")[0])
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
