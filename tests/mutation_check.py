"""Plant bugs one at a time in a scratch copy of the repository and see which the tests catch.

    python tests/mutation_check.py --file infocnf_env/benchmark.py \\
        --old "integers(len(self.pool(split)))" --new "integers(len(self.pool(split)) - 1)" \\
        --tests tests/test_benchmark_guards.py
    python tests/mutation_check.py --plan tests/mutants.toml            # every planted bug of a plan
    python tests/mutation_check.py --plan tests/mutants.toml --only reset-skips-last --json out.json
    python tests/mutation_check.py --plan tests/mutants.toml --only reset-skips-last --whole-suite

A *mutant* is one exact replacement in one file (``old`` must occur exactly once, or give
``occurrence``: which one, counted from 0) and the test files that should notice it. Each
mutant is applied to a scratch copy of the working tree (tracked files and untracked ones that
git does not ignore), the tests run there with ``pytest -x``, and the file is restored before
the next one. The working tree itself is never written: an interrupted check leaves only a
temporary folder behind, which is removed on exit.

A mutant is *caught* when the tests fail (exit code 1); a mutant whose tests cannot even be
collected (exit code 2 or more, e.g. a syntax error) is reported as ``broken``, and one whose
tests pass ``survived``: a missing test. ``--whole-suite`` runs the whole suite as the README's
test command does (two workers) instead of each mutant's test files: whether the suite catches
the bug, not only the files the mutant names. Before the mutants, the plan's test files run once
unmutated (``--no-baseline`` skips it); a failing baseline stops the check, since every mutant
would look caught.

A plan is a TOML file of ``[[mutant]]`` tables with ``name``, ``file``, ``old``, ``new``,
``tests`` (a list of test files) and optionally ``occurrence`` and ``note``. Prints one line per
mutant and a summary; ``--json`` writes the results; the exit code is 1 if any mutant survived.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: list[str]
    occurrence: int | None = None
    note: str = ""


@dataclass
class Outcome:
    name: str
    file: str
    status: str  # caught, survived, broken, invalid
    seconds: float
    detail: str = ""
    tests: list[str] = field(default_factory=list)


def load_plan(path: Path) -> list[Mutant]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise SystemExit("a plan is TOML, read with tomllib: run this with Python 3.11 or later") from None
    data = tomllib.loads(path.read_text())
    mutants = []
    for i, entry in enumerate(data.get("mutant", [])):
        missing = [k for k in ("name", "file", "old", "new", "tests") if k not in entry]
        if missing:
            raise SystemExit(f"{path}: mutant {i} ({entry.get('name', '?')}) lacks {', '.join(missing)}")
        mutants.append(Mutant(**{k: entry[k] for k in Mutant.__dataclass_fields__ if k in entry}))
    names = [m.name for m in mutants]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: mutant names repeat")
    return mutants


def scratch_copy(root: Path) -> Path:
    """A copy of ``root``'s working tree (tracked and untracked, not ignored) in a temporary folder."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                            capture_output=True).stdout.decode().split("\0")
    target = Path(tempfile.mkdtemp(prefix="mutation-check-"))
    for name in filter(None, listed):
        source = root / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def mutate(text: str, mutant: Mutant) -> str:
    """``text`` with the mutant's replacement; ``ValueError`` if ``old`` is not where the mutant says."""
    count = text.count(mutant.old)
    if count == 0:
        raise ValueError(f"{mutant.old!r} is not in {mutant.file}")
    if mutant.occurrence is None and count > 1:
        raise ValueError(f"{mutant.old!r} occurs {count} times in {mutant.file}: give occurrence")
    index = 0 if mutant.occurrence is None else mutant.occurrence
    if not 0 <= index < count:
        raise ValueError(f"occurrence {index} of {mutant.old!r}: it occurs {count} times")
    at = -1
    for _ in range(index + 1):
        at = text.index(mutant.old, at + 1)
    return text[:at] + mutant.new + text[at + len(mutant.old):]


#: The README's test command, for ``--whole-suite``; without the plan's own check
#: (``test_mutation_plan.py``), which fails on any change to a line another mutant targets.
WHOLE_SUITE = ["-n", "2", "--dist", "loadfile", "--ignore", "tests/test_mutation_plan.py", "tests"]


def run_tests(copy: Path, tests: list[str], timeout: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS="1", INFOCNF_CACHE=str(copy / ".cache"),
               PYTHONDONTWRITEBYTECODE="1")
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 3, f"timed out after {timeout:.0f}s"
    return outcome(proc.returncode, proc.stdout, proc.stderr)


def outcome(code: int, stdout: str, stderr: str = "") -> tuple[int, str]:
    """pytest's exit code as the check reads it (1: a test failed; 2 or more: the tests could not
    run) and the line that says why."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    if code == 2 and any(line.startswith("FAILED") for line in failed):
        code = 1  # pytest-xdist reports a stop at the first failure (-x) as an interruption
    return code, (failed[0] if failed else (lines[-1] if lines else stderr.strip()[-200:]))


def check(mutants: list[Mutant], baseline: bool, timeout: float, whole_suite: bool = False) -> list[Outcome]:
    if whole_suite:
        mutants = [replace(m, tests=WHOLE_SUITE) for m in mutants]
    copy = scratch_copy(REPO)
    outcomes: list[Outcome] = []
    try:
        if baseline:
            tests = WHOLE_SUITE if whole_suite else sorted({t for m in mutants for t in m.tests})
            code, detail = run_tests(copy, tests, timeout * 4)
            if code != 0:
                raise SystemExit(f"the unmutated tests fail ({detail}); fix them before planting bugs")
            what = "the whole suite passes" if whole_suite else f"{len(tests)} test file(s) pass"
            print(f"baseline: {what} unmutated", flush=True)
        for mutant in mutants:
            path = copy / mutant.file
            original = path.read_text()
            start = time.perf_counter()
            try:
                path.write_text(mutate(original, mutant))
            except (ValueError, FileNotFoundError) as err:
                outcomes.append(Outcome(mutant.name, mutant.file, "invalid", 0.0, str(err), mutant.tests))
            else:
                try:
                    code, detail = run_tests(copy, mutant.tests, timeout)
                finally:
                    path.write_text(original)
                status = {0: "survived", 1: "caught"}.get(code, "broken")
                outcomes.append(Outcome(mutant.name, mutant.file, status, time.perf_counter() - start, detail,
                                        mutant.tests))
            last = outcomes[-1]
            print(f"{last.status:9s} {last.name:45s} {last.seconds:6.1f}s  {last.detail[:110]}", flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, help="a TOML file of [[mutant]] tables")
    parser.add_argument("--only", nargs="*", default=[], help="run only these mutants of the plan")
    parser.add_argument("--file", help="one mutant: the file to change (relative to the repository root)")
    parser.add_argument("--old", help="one mutant: the exact text to replace")
    parser.add_argument("--new", help="one mutant: what replaces it")
    parser.add_argument("--occurrence", type=int, help="one mutant: which occurrence of --old (from 0)")
    parser.add_argument("--tests", nargs="*", default=[], help="one mutant: the test files to run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's test run")
    parser.add_argument("--json", type=Path, help="write the outcomes here")
    parser.add_argument("--whole-suite", action="store_true",
                        help="run the whole suite (two workers) for each mutant instead of its test files")
    args = parser.parse_args(argv)
    if args.plan:
        mutants = load_plan(args.plan)
        if args.only:
            unknown = sorted(set(args.only) - {m.name for m in mutants})
            if unknown:
                raise SystemExit(f"no mutant named {', '.join(unknown)} in {args.plan}")
            mutants = [m for m in mutants if m.name in args.only]
    elif args.file and args.old is not None and args.new is not None and args.tests:
        mutants = [Mutant("cli", args.file, args.old, args.new, list(args.tests), args.occurrence)]
    else:
        parser.error("give --plan, or --file, --old, --new and --tests")
    outcomes = check(mutants, not args.no_baseline, args.timeout, args.whole_suite)
    counted = [o for o in outcomes if o.status in ("caught", "survived")]
    caught = sum(o.status == "caught" for o in counted)
    print(f"\ncaught {caught} of {len(counted)} planted bugs"
          + "".join(f"; {n} {s}" for s in ("broken", "invalid") if (n := sum(o.status == s for o in outcomes))))
    for o in outcomes:
        if o.status == "survived":
            print(f"  survived: {o.name} ({o.file})")
    if args.json:
        args.json.write_text(json.dumps({"caught": caught, "counted": len(counted),
                                         "outcomes": [asdict(o) for o in outcomes]}, indent=2))
    return 1 if any(o.status in ("survived", "invalid") for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
