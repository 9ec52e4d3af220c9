"""Benchmark: the start-up time of every script and command, ``--help`` and a usage error.

    agcam bench-startup [--repeats 5] [--baseline DIR]

For every top-level script (``localization.py``, ``save_h5.py``, ``ABPC.py``,
``perturbation.py``, ``segmentation.py``) and every ``agcam`` command, two whole processes are
timed (wall clock, the median of ``--repeats`` runs): ``--help``, and a usage error (an unknown
flag, which the parser refuses). ``--baseline DIR`` times the same commands in another checkout
of the project (e.g. ``git archive HEAD~5 | tar -x -C DIR``), in turns within the same repeat, so
that the ratio compares runs made under the same machine load. What a process imports before the
parser answers is what it costs; ``tests/test_startup.py`` checks that it imports no heavy
library.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import List, Optional, Sequence, Tuple

from agcam.cli.common import add_repeats_arg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ("localization.py", "save_h5.py", "ABPC.py", "perturbation.py", "segmentation.py")
#: a flag no parser has: the usage error each case is timed on
UNKNOWN_FLAG = "--no_such_flag"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_repeats_arg(parser, 5)
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="another checkout of the project, timed in turns with this one")
    return parser


def cases(root: str, commands: Sequence[str]) -> List[Tuple[str, List[str]]]:
    """``(name, argv without the interpreter)`` of every script and command found in ``root``
    (a script missing there is left out)."""
    found = [(script, [os.path.join(root, script)]) for script in SCRIPTS
             if os.path.isfile(os.path.join(root, script))]
    found += [(f"agcam {name}", ["-m", "agcam", name]) for name in commands]
    return found


def _timed(argv: List[str], cwd: str) -> Tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=cwd)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=300)
    return time.perf_counter() - start, done.returncode


def measure(root: str, argv: List[str]) -> Tuple[float, float]:
    """One run of ``argv --help`` and one of ``argv --no_such_flag`` in ``root``: seconds each."""
    help_s, help_rc = _timed(argv + ["--help"], root)
    error_s, error_rc = _timed(argv + [UNKNOWN_FLAG], root)
    if help_rc != 0 or error_rc != 2:
        raise RuntimeError(f"{' '.join(argv)} in {root}: --help exited {help_rc}, a usage error "
                           f"{error_rc} (expected 0 and 2)")
    return help_s, error_s


def _commands_in(root: str) -> List[str]:
    """The ``agcam`` commands of the checkout at ``root`` (asked of a process run there)."""
    done = subprocess.run([sys.executable, "-c", "from agcam.__main__ import COMMANDS; "
                           "print(' '.join(COMMANDS))"], cwd=root, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=root), timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{root}: cannot list the agcam commands ({done.stderr.strip()})")
    return done.stdout.split()


def main(args: argparse.Namespace) -> int:
    from agcam.errors import UsageError
    if args.repeats < 1:
        raise UsageError(f"--repeats {args.repeats}: must be at least 1")
    roots = [ROOT]
    if args.baseline is not None:
        if not os.path.isfile(os.path.join(args.baseline, "agcam", "__main__.py")):
            raise UsageError(f"--baseline {args.baseline}: not a checkout of the project "
                             "(no agcam/__main__.py)")
        roots.append(os.path.abspath(args.baseline))
    commands = {root: _commands_in(root) for root in roots}
    names: List[str] = []
    table = {}
    for root in roots:
        for name, argv in cases(root, commands[root]):
            table[(root, name)] = (argv, [], [])
            if name not in names:
                names.append(name)
    print(f"{sys.executable}, {os.cpu_count()} CPU(s); median of {args.repeats} run(s), "
          "wall seconds of a whole process", flush=True)
    for _ in range(args.repeats):
        for name in names:
            for root in roots:   # in turns: the same machine load for both checkouts
                if (root, name) in table:
                    argv, helps, errors = table[(root, name)]
                    help_s, error_s = measure(root, argv)
                    helps.append(help_s)
                    errors.append(error_s)

    def median(root: str, name: str, column: int) -> Optional[float]:
        entry = table.get((root, name))
        return None if entry is None else statistics.median(entry[column])

    def cell(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.2f}"

    header = "| command | --help (s) | usage error (s) |"
    rule = "|---|---:|---:|"
    if len(roots) > 1:
        header = ("| command | --help, baseline (s) | --help (s) | ratio | usage error, "
                  "baseline (s) | usage error (s) | ratio |")
        rule = "|---|---:|---:|---:|---:|---:|---:|"
    print(header)
    print(rule)
    for name in names:
        now = [median(ROOT, name, 1), median(ROOT, name, 2)]
        if len(roots) == 1:
            print(f"| {name} | {cell(now[0])} | {cell(now[1])} |")
            continue
        before = [median(roots[1], name, 1), median(roots[1], name, 2)]
        ratios = [cell(n / b) if n is not None and b else "-" for n, b in zip(now, before)]
        print(f"| {name} | {cell(before[0])} | {cell(now[0])} | {ratios[0]} | {cell(before[1])} "
              f"| {cell(now[1])} | {ratios[1]} |")
    sys.stdout.flush()
    return 0
