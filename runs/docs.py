"""docs/results.md, generated from the result files in runs/results/.

    python -m runs.docs              # (re)write docs/results.md
    python -m runs.docs --check      # exit 1 if docs/results.md differs from what the JSON gives
    python -m runs.docs --stdout     # print it instead

Every number on the generated page is formatted from a field of a committed JSON file (the
tables by :mod:`runs.tables`, the prose by each study's page section), so no figure can drift
from the results it describes: change a result, rerun this command, commit both. A study whose
JSON is absent is left out, and so is any sentence that needs it.

This module assembles the page: its head (title, introduction, the table of every study of the
registry, :mod:`runs.studies`) and the studies' sections in page order (:func:`sections`). Each
section, with its title, the files it needs and its place on the page, is its study's
:class:`runs.study.Page`; the formatters and the facts several sections share are
:mod:`runs.format`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agents.cli import command_parser
from runs.format import cell_text, eval_tol, num_blocks, per_seed, rng, row
from runs.studies import registry
from runs.study import Res, Result, Study

RESULTS = Path("runs/results")
OUT = Path("docs/results.md")


# ----------------------------------------------------------------------------- the page's head


def backward_nfe(d: Result) -> str:
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


def study_index(res: Res, studies: list[Study]) -> str:
    """The table of every registered study: its section (where the page has it), its name and
    what it runs, in page order; studies whose section the page lacks come last."""
    present = [s for s in studies if all(n in res for n in s.page.needs)]
    absent = [s for s in registry().values() if s not in present]
    lines = ["| section | `python -m runs.reproduce` | what it runs |", "| --- | --- | --- |"]
    lines += [f"| [{s.page.title}](#{s.name}) | `{s.name}` | {cell_text(s.summary)} |" for s in present]
    lines += [f"| (no committed result) | `{s.name}` | {cell_text(s.summary)} |" for s in absent]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- sections


def sections() -> list[Study]:
    """Every registered study, in page order (ascending ``page.order``, which must be unique)."""
    studies = list(registry().values())
    orders = [s.page.order for s in studies]
    if len(set(orders)) != len(orders):
        clash = sorted(f"{s.name} ({s.page.order})" for s in studies if orders.count(s.page.order) > 1)
        raise ValueError(f"sections share a page order: {', '.join(clash)}")
    return sorted(studies, key=lambda s: s.page.order)


def load(results: Path = RESULTS) -> Res:
    """Every ``*.json`` in ``results``, by file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(results).glob("*.json"))}


def render(results: Path = RESULTS) -> str:
    """The whole page, from the JSON files in ``results``."""
    res = load(results)
    present = [s for s in sections() if all(n in res for n in s.page.needs)]
    head = [
        "# Results: does what the paper claims hold? (digits, CPU)",
        "<!-- Generated by `python -m runs.docs` from runs/results/*.json. Edit the study modules "
        "(runs/studies/) or runs/docs.py, not this file. -->",
    ]
    if "digits-table" in res:
        head.append(intro(res))
    head.append(study_index(res, present))
    body = [f'<a id="{s.name}"></a>\n## {s.page.title}' + (f" (`{s.name}`)" if s.stem in res else "")
            + f"\n\n{s.page.render(res)}" for s in present]
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
