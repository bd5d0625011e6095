"""griffin-bench command line.

python -m bench list [models|impls|workloads|suites]
python -m bench run SUITE [--out DIR] [--device cpu|cuda] [--impl NAME ...] [--model NAME ...]
python -m bench show RESULTS.jsonl [...]
python -m bench compare A.jsonl B.jsonl [--format table|csv|json] [--html PATH] [--fail-on-slower]
python -m bench ceilings [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_OUT = Path("results/local")
DEFAULT_REPORTS = Path("reports/local")
RESULTS, REPORTS = Path("results"), Path("reports")


def _list(what: str) -> None:
    from bench import catalog
    from bench.workloads import WORKLOADS
    from models.config import PRESETS, describe, preset

    if what in ("all", "models"):
        print("models:")
        for name in PRESETS:
            print("  " + describe(preset(name)))
    if what in ("all", "impls"):
        print("implementations:")
        for impl in catalog.IMPLEMENTATIONS:
            missing = catalog.missing_requirements(impl)
            state = f"unavailable ({missing})" if missing else "available"
            print(
                f"  {impl.name:<22} {impl.kind:<6} {impl.backend:<5} {impl.role:<9} {state}: "
                f"{impl.description}"
            )
    if what in ("all", "workloads"):
        print("workloads:")
        for name, wl in WORKLOADS.items():
            defaults = {**wl.defaults, **getattr(wl, "flags", {})}
            params = [*wl.required, *(f"{k}={v}" for k, v in defaults.items())]
            print(f"  {name:<11} {', '.join(params)}: {(wl.__doc__ or '').strip()}")
    if what in ("all", "suites"):
        import tomllib

        print("suites:")
        for name in catalog.suites():
            desc = tomllib.loads(catalog.suite_path(name).read_text()).get("description", "")
            print(f"  {name:<12} {desc}")
        for name, members in catalog.SUITE_GROUPS.items():
            print(f"  {name:<12} runs {', '.join(members)}, each into its own records file")


def _run(args) -> int:
    from bench import catalog, runner, suite

    device = args.device or runner.default_device()
    name = args.suite or ("smoke" if device == "cpu" else "default")
    members = catalog.suite_group(name)
    if len(members) > 1 and args.report:
        raise ValueError(f"--report names one file; {name!r} runs {len(members)} suites")
    loaded = [suite.load(m, device, impls=args.impl, models=args.model) for m in members]
    for s in loaded:
        code = _run_suite(args, s, device)
        if code:
            return code
    return 0


def _run_suite(args, s, device) -> int:
    from bench import runner

    out = Path(args.out) / f"{s.name}.jsonl"
    if args.dry_run:
        for p in s.points:
            print(p.label())
        print(f"{len(s.points)} points -> {out}")
        return 0
    runner.run(
        s,
        out,
        device,
        isolate=not args.no_isolate,
        progress=not args.quiet,
        point_timeout=args.point_timeout,
    )
    from bench.show import show

    show([out])
    try:
        from bench.report import build
    except ImportError as e:  # plotly missing (a bare GPU image): the records are what matter
        print(
            f"records: {out}\nreport:  not written ({(e.name or str(e)).split('.')[0]} is "
            "not installed: "
            "pip install 'griffin-bench[report]', then python -m bench report "
            f"{out})"
        )
        return 0
    report = build([out], Path(args.report) if args.report else DEFAULT_REPORTS / f"{s.name}.html")
    print(f"records: {out}\nreport:  {report}")
    return 0


def _report(args) -> int:
    from bench.report import build

    if args.all:
        made = 0
        for path in sorted(RESULTS.glob("*/*.jsonl")):
            if path.parent.name == "local":
                continue
            out = REPORTS / f"{path.parent.name}-{path.stem}.html"
            print(build([path], out, plotly_js="shared"))
            made += 1
        if not made:
            raise ValueError(f"no committed results files under {RESULTS}/DEVICE/*.jsonl")
        return 0
    if not args.results or not args.output:
        raise ValueError("give RESULTS files and -o OUTPUT.html (or --all)")
    missing = [p for p in args.results if not Path(p).exists()]
    if missing:
        raise ValueError(f"no such results file(s): {', '.join(missing)}")
    print(build([Path(p) for p in args.results], Path(args.output), plotly_js=args.plotly_js))
    return 0


def _compare(args) -> int:
    from bench import compare

    c = compare.compare_files(args.a, args.b)
    if args.format == "table":
        print(compare.format_table(c))
    else:  # stdout stays machine-readable; what is not like for like goes to stderr
        for line in [*c.differences, *c.problems, *compare.notes(c)]:
            print(f"warning: {line}", file=sys.stderr)
        print(compare.FORMATS[args.format](c))
    if args.html:
        try:
            out = compare.write_html(c, args.html, args.a, args.b)
        except ImportError as e:  # plotly missing: bench.report cannot be imported
            raise ValueError(
                f"--html needs the report extra ({(e.name or str(e)).split('.')[0]} is not "
                "installed: pip install 'griffin-bench[report]')"
            ) from None
        print(f"page: {out}", file=sys.stderr if args.format != "table" else sys.stdout)
    return 1 if args.fail_on_slower and c.any_slower else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="griffin-bench: measure Hawk, Griffin and MQA implementations side by side.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="models, implementations, workloads and suites")
    p_list.add_argument(
        "what", nargs="?", default="all", choices=["all", "models", "impls", "workloads", "suites"]
    )

    p_run = sub.add_parser("run", help="run a suite (a name from `list suites` or a .toml path)")
    p_run.add_argument("suite", nargs="?", help="default: smoke without a GPU, default on a GPU")
    p_run.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"records folder (default {DEFAULT_OUT})"
    )
    p_run.add_argument(
        "--report", help=f"HTML report to write (default {DEFAULT_REPORTS}/SUITE.html)"
    )
    p_run.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    p_run.add_argument("--impl", action="append", help="only this implementation (repeatable)")
    p_run.add_argument("--model", action="append", help="only this model (repeatable)")
    p_run.add_argument("--no-isolate", action="store_true", help="run every point in this process")
    p_run.add_argument(
        "--point-timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="kill a worker that reports no result for S seconds (default 900); its point is "
        "recorded as an error",
    )
    p_run.add_argument("--dry-run", action="store_true", help="list the points and stop")
    p_run.add_argument("--quiet", action="store_true", help="no progress lines")

    p_show = sub.add_parser("show", help="summarise records files")
    p_show.add_argument("results", nargs="+")

    p_rep = sub.add_parser("report", help="build an HTML report from records files")
    p_rep.add_argument("results", nargs="*")
    p_rep.add_argument("-o", "--output", help="the HTML file to write")
    p_rep.add_argument(
        "--all",
        action="store_true",
        help="a report per committed results file, sharing reports/plotly.min.js",
    )
    p_rep.add_argument(
        "--plotly-js",
        choices=["inline", "shared"],
        default="inline",
        help="inline: plotly.js inside the page (default, one self-contained file); shared: "
        "written once as plotly.min.js beside the page",
    )

    p_cmp = sub.add_parser("compare", help="compare two records files point by point (B against A)")
    p_cmp.add_argument("a", metavar="A", help="the baseline records file")
    p_cmp.add_argument("b", metavar="B", help="the records file compared against A")
    p_cmp.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="terminal output"
    )
    p_cmp.add_argument("--html", metavar="PATH", help="also write the comparison as an HTML page")
    p_cmp.add_argument(
        "--fail-on-slower",
        action="store_true",
        help="exit 1 if any point is slower (its 95%% interval of B/A lies above 1)",
    )

    p_ceil = sub.add_parser("ceilings", help="measure copy bandwidth and matmul rate here")
    p_ceil.add_argument("--device", choices=["cpu", "cuda"])

    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            _list(args.what)
        elif args.command == "run":
            return _run(args)
        elif args.command == "report":
            return _report(args)
        elif args.command == "compare":
            return _compare(args)
        elif args.command == "show":
            from bench.show import show

            show([Path(p) for p in args.results])
        elif args.command == "ceilings":
            from bench import ceilings, runner

            for k, v in ceilings.measure(args.device or runner.default_device()).items():
                print(f"{k}: {v}")
    except ValueError as exc:  # bad suite, unknown names: a clear message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
