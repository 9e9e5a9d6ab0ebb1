"""docs/results.md and README.md's results, generated from the result files in runs/results/.

    python -m runs.docs              # (re)write docs/results.md and README.md's generated blocks
    python -m runs.docs --check      # exit 1 if either differs from what the JSON gives
    python -m runs.docs --stdout     # print the page instead

Every number on the generated page is formatted from a field of a committed JSON file (the
tables by :mod:`runs.tables`, the prose by each study's page section), so no figure can drift
from the results it describes: change a result, rerun this command, commit both. A study whose
JSON is absent is left out, and so is any sentence that needs it.

This module assembles the page: its head (title, introduction, the table of every study of the
registry, :mod:`runs.studies`) and the studies' sections in page order (:func:`sections`). Each
section, with its title, the files it needs and its place on the page, is its study's
:class:`runs.study.Page`; the formatters and the facts several sections share are
:mod:`runs.format`.

README.md holds blocks between ``<!-- runs.docs:NAME -->`` and ``<!-- /runs.docs:NAME -->``
that this command rewrites and nothing else touches: ``findings``, the table "What the studies
found" (one row per study with a :class:`runs.study.Finding`), and one block per study with a
:attr:`runs.study.Study.readme` (the benchmark's tables).
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
README = Path("README.md")
#: The README block of the findings table.
FINDINGS = "findings"


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


# ----------------------------------------------------------------------------- README.md


def findings_table(res: Res) -> str:
    """README's table "What the studies found": one row per study with a finding and a result,
    in ascending :attr:`runs.study.Finding.order` (unique)."""
    studies = [s for s in registry().values() if s.finding is not None]
    orders = [s.finding.order for s in studies if s.finding is not None]
    if len(set(orders)) != len(orders):
        raise ValueError(f"findings share a table order: {sorted(o for o in orders if orders.count(o) > 1)}")
    lines = ["| question | study | in short |", "| --- | --- | --- |"]
    for s in sorted(studies, key=lambda s: s.finding.order if s.finding else 0):
        if s.finding is None or s.stem not in res:
            continue
        links = ", ".join(f"[{n}]({OUT.as_posix()}#{n})" for n in (s.name, *s.finding.also))
        lines.append(f"| {s.finding.question} | {links} | {cell_text(s.finding.answer(res))} |")
    return "\n".join(lines)


def readme_blocks(res: Res) -> dict[str, str]:
    """README's generated blocks by name: the findings table and each study's :attr:`Study.readme`."""
    blocks = {FINDINGS: findings_table(res)}
    blocks.update({s.name: s.readme(res[s.stem]) for s in registry().values() if s.readme and s.stem in res})
    return blocks


def fill_readme(text: str, blocks: dict[str, str]) -> str:
    """``text`` with each named block's body replaced; one ``ValueError`` for a block whose
    markers it does not hold exactly once."""
    for name, body in blocks.items():
        start, end = f"<!-- runs.docs:{name} -->", f"<!-- /runs.docs:{name} -->"
        if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
            raise ValueError(f"README.md needs one block {start} ... {end}")
        head, rest = text.split(start)
        tail = rest.split(end)[1]
        text = f"{head}{start}\n{body}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("runs.docs", __doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the STUDY.json files")
    parser.add_argument("--out", type=Path, default=OUT, help="the page to write")
    parser.add_argument("--readme", type=Path, default=README, help="the README whose generated blocks to write")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if --out or --readme is out of date")
    mode.add_argument("--stdout", action="store_true", help="print the page instead of writing it")
    args = parser.parse_args(argv)
    text = render(args.results)
    if args.stdout:
        sys.stdout.write(text)
        return 0
    readme = args.readme.read_text()
    outputs = {args.out: text, args.readme: fill_readme(readme, readme_blocks(load(args.results)))}
    if args.check:
        stale = [path for path, new in outputs.items() if (path.read_text() if path.exists() else "") != new]
        for path in stale:
            print(f"{path} is out of date: run `python -m runs.docs`", file=sys.stderr)
        return 1 if stale else 0
    for path, new in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != new:
            path.write_text(new)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
