"""`mlp-compare`: one table of many run folders, with what was varied between them."""

from __future__ import annotations

import argparse
import sys

from mlptrain.cli.common import add_version_argument, run_command
from mlptrain.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-compare",
        description="Compare run folders: status, best epoch, validation and test results, "
        "and one column per config key that differs. Runs that differ only in their seed "
        "form one row (mean ± std).",
        epilog="examples:\n"
        "  mlp-compare runs/\n"
        "  mlp-compare runs/fashion-* runs/sweep-lr-*/ --sort test_accuracy --top 10\n"
        "  mlp-compare runs/ --where data.dataset=mnist --plot compare.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run or sweep folders, globs")
    parser.add_argument(
        "--sort",
        metavar="COLUMN",
        help="test_accuracy, best_val, train_seconds or a config key (default: test_accuracy)",
    )
    parser.add_argument("--top", type=int, metavar="N", help="only the first N rows")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only runs whose config has this value (repeatable)",
    )
    parser.add_argument("--no-group", action="store_true", help="one row per run, seeds apart")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON document (an array)")
    output.add_argument("--csv", action="store_true", help="print CSV")
    parser.add_argument("--plot", metavar="FILE", help="draw the validation curves into FILE")
    add_version_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("mlp-compare", lambda: compare(args))


def compare(args: argparse.Namespace) -> int:
    from mlptrain.compare import output
    from mlptrain.compare.runs import find_runs, matches, read_runs, rows_of, sort_rows
    from mlptrain.config.files import parse_override

    if args.top is not None and args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    conditions = {}
    for text in args.where:
        parts, value = parse_override(text)
        conditions[".".join(parts)] = value
    folders, warnings = find_runs(args.paths)
    runs, damaged = read_runs(folders)
    for warning in [*warnings, *damaged]:
        print(f"mlp-compare: warning: {warning}", file=sys.stderr)
    if not runs:
        raise UsageError("no run could be read from " + ", ".join(args.paths))
    runs = [run for run in runs if matches(run, conditions)]
    if not runs:
        print("mlp-compare: no run matches --where", file=sys.stderr)
        return 0
    rows, keys = rows_of(runs, group=not args.no_group)
    rows = sort_rows(rows, args.sort or "test_accuracy")[: args.top]
    if args.json:
        sys.stdout.write(output.to_json(rows, keys))
    elif args.csv:
        sys.stdout.write(output.to_csv(rows, keys))
    elif sys.stdout.isatty():
        sys.stdout.write(output.table(rows, keys))
    else:
        sys.stdout.write(output.markdown(rows, keys))
    if args.plot:
        output.plot(rows, keys, args.plot)
        print(f"mlp-compare: curves written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
