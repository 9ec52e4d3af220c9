"""agcam figures: every committed figure and the learnt-model page, from the registries.

    agcam figures                              # docs/figures/*.png, figures.json, docs/learnt.md
    agcam figures --figure learnt_methods.png --no_table
    agcam figures --out /tmp/figures --doc /tmp/learnt.md --limit_per_class 5

Draws every registered figure (agcam.study.figures.FIGURES) with every registered method
(floors last), records in OUT/figures.json which methods each figure shows (a test compares it
with the registry), and rewrites the learnt-model page (docs/learnt.md: the table of agcam
study, run or read back from --runs).
"""
from __future__ import annotations

import argparse
import os

from agcam.cli.common import (
    add_method_arg,
    add_out_arg,
    check_at_least,
    resolve_methods,
    typed,
)
from agcam.cli.study import DEFAULT_RUNS, add_table_arguments

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIGURES_DIR = os.path.join(ROOT, "docs", "figures")
DOC = os.path.join(ROOT, "docs", "learnt.md")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_method_arg(parser, default=("all",))
    add_out_arg(parser, "the folder of the figures and figures.json", default=FIGURES_DIR,
                default_text="docs/figures")
    parser.add_argument("--figure", nargs="+", default=None, metavar="NAME",
                        help="only these figures (file names, e.g. learnt_methods.png) "
                             "(default: every registered figure)")
    parser.add_argument("--image_names", nargs="+", default=None, metavar="NAME",
                        help="held-out images of learnt_methods.png (default: the first image "
                             "of classes 1, 2, 5 and 6)")
    parser.add_argument("--pair", default=None, metavar="NAME",
                        help="the two-object image of learnt_two_objects.png (default: the "
                             "first the model gives both classes p >= 0.2)")
    parser.add_argument("--doc", default=DOC, metavar="FILE",
                        help="the learnt-model page to rewrite (default: docs/learnt.md)")
    parser.add_argument("--runs", default=DEFAULT_RUNS, metavar="DIR",
                        help="the folder of agcam study's per-method runs, read back or run "
                             f"(default: {DEFAULT_RUNS})")
    parser.add_argument("--no_table", action="store_true",
                        help="the figures only, not the page")
    add_table_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from agcam.cli.study import study_table
    from agcam.study.figures import DEFAULT_IMAGES, render
    from agcam.study.table import doc_lines, write_doc

    methods = resolve_methods(args.method, flag=typed(args, "method"))
    check_at_least(args, "limit_per_class", "limit", "batch_size")
    render(args.out, args.figure, methods, args.image_names or DEFAULT_IMAGES, args.pair,
           device=args.device)
    if not args.no_table:
        results, pairs, seconds = study_table(args, methods, args.runs)
        command = "agcam figures" + "".join(
            f" --{flag} {getattr(args, flag)}" for flag in ("limit_per_class", "limit")
            if getattr(args, flag))
        print(f"wrote {write_doc(args.doc, doc_lines(results, pairs, command, seconds))}")
    return 0
