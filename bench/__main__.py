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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("griffin-bench")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "(not installed)"


def _aligned(rows: list[list[str]], indent: str = "  ") -> str:
    """Rows of cells as left-aligned columns (the last column free)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        indent + " ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + " " + r[-1]
        for r in rows
    )


def _list(what: str) -> None:
    from bench import catalog
    from bench.workloads import WORKLOADS
    from models.config import PRESETS, describe_fields, preset

    if what in ("all", "models"):
        print("models:")
        fields = [describe_fields(preset(name)) for name in PRESETS]
        head = [list(fields[0])]
        print(_aligned(head + [list(f.values()) for f in fields]))
    if what in ("all", "impls"):
        print("implementations:")
        rows = [["name", "kind", "backend", "role", "state: description"]]
        for impl in catalog.IMPLEMENTATIONS:
            missing = catalog.missing_requirements(impl)
            state = f"unavailable ({missing})" if missing else "available"
            rows.append(
                [impl.name, impl.kind, impl.backend, impl.role, f"{state}: {impl.description}"]
            )
        print(_aligned(rows))
    if what in ("all", "workloads"):
        print("workloads:")
        rows = [["name", "parameters (defaults)", "what it measures"]]
        for name, wl in WORKLOADS.items():
            defaults = {**wl.defaults, **getattr(wl, "flags", {})}
            params = [*wl.required, *(f"{k}={v}" for k, v in defaults.items())]
            rows.append([name, ", ".join(params), wl.description])
        print(_aligned(rows))
    if what in ("all", "suites"):
        import tomllib

        print("suites:")
        rows = [["name", "description"]]
        for name in catalog.suites():
            desc = tomllib.loads(catalog.suite_path(name).read_text()).get("description", "")
            rows.append([name, desc])
        for name, members in catalog.SUITE_GROUPS.items():
            rows.append([name, f"runs {', '.join(members)}, each into its own records file"])
        print(_aligned(rows))


def _run(args) -> int:
    from bench import catalog, runner, suite

    device = args.device or runner.default_device()
    name = args.suite or ("smoke" if device == "cpu" else "default")
    members = catalog.suite_group(name)
    if len(members) > 1 and args.report:
        raise ValueError(f"--report names one file; {name!r} runs {len(members)} suites")
    if Path(args.out).is_file():
        raise ValueError(
            f"--out {args.out} is a file; it names a folder (records go to OUT/SUITE.jsonl)"
        )
    loaded = [suite.load(m, device, impls=args.impl, models=args.model) for m in members]
    for s in loaded:
        if not s.points:
            raise ValueError(f"{s.name}: no point left to run after the --impl / --model filters")
    for s in loaded:
        code = _run_suite(args, s, device)
        if code:
            return code
    return 0


def _run_suite(args, s, device) -> int:
    from bench import runner

    out = Path(args.out) / f"{s.name}.jsonl"
    rerun = "all" if args.force else "failed" if args.retry else None
    if args.dry_run:
        todo = runner.todo_points(s, out, rerun)
        for p in todo:
            print(p.label())
        done = len(s.points) - len(todo)
        print(
            f"{len(todo)} points would run -> {out}"
            + (f" ({done} already recorded)" if done else "")
        )
        return 0
    summary = runner.run(
        s,
        out,
        device,
        isolate=not args.no_isolate,
        progress=not args.quiet,
        point_timeout=args.point_timeout,
        rerun=rerun,
    )
    from bench.show import show

    show([out], impls=args.impl, models=args.model)
    try:
        from bench.report import build
    except ImportError as e:  # plotly missing (a bare GPU image): the records are what matter
        print(
            f"records: {out}\nreport:  not written ({(e.name or str(e)).split('.')[0]} is "
            "not installed: "
            "pip install 'griffin-bench[report]', then python -m bench report "
            f"{out})"
        )
        return _verdict(out, summary)
    report = build([out], Path(args.report) if args.report else report_path(out))
    print(f"records: {out}\nreport:  {report}")
    return _verdict(out, summary)


def _verdict(out: Path, summary: dict) -> int:
    """1 when the run measured points and none of them is ok (every one failed), else 0."""
    from bench.results import read_records

    if not summary["points"]:
        return 0
    mine = [r for r in read_records(out)[0] if r["run_id"] == summary["run_id"]]
    statuses = [r["status"] for r in mine if r["workload"] != "ceiling"]
    if statuses and "ok" not in statuses:
        counts = ", ".join(f"{statuses.count(k)} {k}" for k in sorted(set(statuses)))
        print(
            f"error: no point of this run succeeded ({counts}); see the table above",
            file=sys.stderr,
        )
        return 1
    return 0


def report_path(records: Path) -> Path:
    """Where `run` writes its report: reports/local/SUITE.html for the default records folder,
    reports/DEVICE-SUITE.html for results/DEVICE/SUITE.jsonl (the committed layout), else beside
    the records (OUT/SUITE.html)."""
    if records.parent == DEFAULT_OUT:
        return DEFAULT_REPORTS / f"{records.stem}.html"
    if records.parent.parent == RESULTS:
        return REPORTS / f"{records.parent.name}-{records.stem}.html"
    return records.with_suffix(".html")


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
    paths = _results_files(args.results)
    if Path(args.output).is_dir():
        raise ValueError(f"-o {args.output} is a folder; it names the HTML file to write")
    print(build(paths, Path(args.output), plotly_js=args.plotly_js))
    return 0


def _results_files(names: list[str]) -> list[Path]:
    """Records files that exist and hold at least one point; else one clear line."""
    from bench.results import read_records

    paths = [Path(p) for p in names]
    for path in paths:
        if path.is_dir():
            raise ValueError(f"{path} is a folder; give its records files ({path}/SUITE.jsonl)")
        if not path.exists():
            raise ValueError(f"no such results file: {path}")
    if not any(r["workload"] != "ceiling" for p in paths for r in read_records(p)[0]):
        raise ValueError(f"no records in {', '.join(map(str, paths))}")
    return paths


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
    parser.add_argument("--version", action="version", version=f"griffin-bench {_version()}")
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
        "--report",
        help=f"HTML report to write (default: {DEFAULT_REPORTS}/SUITE.html for the default --out, "
        f"{REPORTS}/DEVICE-SUITE.html for --out {RESULTS}/DEVICE, else OUT/SUITE.html)",
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
    p_run.add_argument(
        "--retry",
        action="store_true",
        help="measure again the points whose newest record is not ok",
    )
    p_run.add_argument(
        "--force",
        action="store_true",
        help="measure again every point of the suite (with --impl/--model: those chosen)",
    )
    p_run.add_argument("--dry-run", action="store_true", help="list the points that would run")
    p_run.add_argument("--quiet", action="store_true", help="no progress lines")

    p_show = sub.add_parser("show", help="summarise records files")
    p_show.add_argument("results", nargs="+")
    for flag, what in (("impl", "implementation"), ("model", "model"), ("workload", "workload")):
        p_show.add_argument(f"--{flag}", action="append", help=f"only this {what} (repeatable)")
    p_show.add_argument(
        "--status", action="append", help="only points of this status (ok, oom, error, ...)"
    )
    p_show.add_argument(
        "--format",
        default="table",
        choices=["table", "csv", "markdown", "json"],
        help="table (default, 120 columns), csv, markdown or json (every column in full)",
    )

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

    p_head = sub.add_parser(
        "headline", help="the README's headline tables from one device's records folder"
    )
    p_head.add_argument("folder", help="a records folder, e.g. results/h200")
    p_head.add_argument("--write", metavar="README", help="replace that file's headline section")

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

            show(
                _results_files(args.results),
                args.format,
                impls=args.impl,
                models=args.model,
                workloads=args.workload,
                statuses=args.status,
            )
        elif args.command == "headline":
            from bench import headline

            folder = Path(args.folder)
            if not folder.is_dir():
                raise ValueError(f"{folder}: not a records folder (e.g. results/h200)")
            if args.write:
                headline.write(folder, Path(args.write))
                print(f"{args.write}: headline section of {folder} written")
            else:
                print(headline.tables(folder), end="")
        elif args.command == "ceilings":
            from bench import ceilings, runner

            for k, v in ceilings.measure(args.device or runner.default_device()).items():
                print(f"{k}: {v}")
    except KeyboardInterrupt as exc:  # Ctrl-C: what was recorded stays (runner.Interrupted says)
        print(str(exc) or "interrupted", file=sys.stderr)
        return 130
    except ValueError as exc:  # bad suite, unknown names: a clear message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable or unreadable path
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
