"""The README's headline tables (bench/headline.py): in sync with the committed H200 records, and
computed right from records."""

import json
from pathlib import Path

from bench import headline
from bench.__main__ import main as cli

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_section_is_what_the_committed_records_give():
    text = (ROOT / "README.md").read_text()
    want = headline.section(ROOT / "results" / "h200")
    assert want in text, (
        "README.md's headline section differs from the committed records: run "
        "`python -m bench headline results/h200 --write README.md`"
    )


def _rec(**kw):
    base = {"schema": 1, "run_id": "r", "model": "-", "status": "ok", "env": {"git_sha": "abc1234"}}
    rec = {**base, **kw}
    rec.setdefault("key", f"{rec['workload']}|{rec['model']}|{rec['impl']}|{rec['params']}")
    return rec


def _folder(tmp_path, name, records):
    folder = tmp_path / "h200"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_decode_is_per_step_and_kernels_against_the_fastest_peer(tmp_path):
    dec = _rec(
        workload="decode", model="gemma-2b", impl="ours-torch-optimized", suite="decode",
        params={"batch": 16, "prompt": 2048, "steps": 8},
        timing={"median_ms": 24.0}, metrics={"tokens_per_s": 5333.3, "mbu": 0.4},
    )  # fmt: skip
    failed = {**dec, "impl": "transformers-gemma", "status": "error", "key": "x"}
    _folder(tmp_path, "decode", [dec, failed])
    k = {"workload": "kernel_scan", "params": {"backward": 0, "seq_len": 4096}, "suite": "kernels"}
    ceil = {"copy_gbps": 4000.0}
    folder = _folder(
        tmp_path, "kernels",
        [
            _rec(**k, impl="ours-triton", role="ours", timing={"median_ms": 0.2},
                 metrics={"gbps": 3000.0}, ceilings=ceil),
            _rec(**k, impl="ours-jax-optimized", role="ours", timing={"median_ms": 0.25}),
            _rec(**k, impl="fla-chunk", role="peer", timing={"median_ms": 0.7}),
            _rec(**k, impl="recurrentgemma-jax-linear", role="peer", timing={"median_ms": 0.9}),
        ],
    )  # fmt: skip
    text = headline.tables(folder)
    assert "| gemma-2b | ours-torch-optimized | 16 | 2048 | 3.000 | 5,333 | 40.0% |" in text
    assert "transformers-gemma" not in text  # not ok: not a headline number
    assert "| scan fwd | 4096 | ours-triton | 0.200 | 75.0% | fla-chunk | 3.50× |" in text
    assert "No prefill or training records" in text and "No paper-figure records" in text
    assert "From decode.jsonl (commit abc1234)." in text


def test_write_replaces_only_the_section_and_bad_input_is_one_line(tmp_path, capsys):
    folder = _folder(tmp_path, "decode", [])
    readme = tmp_path / "README.md"
    begin = headline.BEGIN.format(device="h200")
    readme.write_text(f"# x\n\n{begin}\nold\n{headline.END}\n\nafter\n")
    assert cli(["headline", str(folder), "--write", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\n" + begin) and text.endswith(headline.END + "\n\nafter\n")
    assert "old" not in text and "No decode records" in text
    assert cli(["headline", str(folder), "--write", str(tmp_path / "none.md")]) == 2
    (tmp_path / "plain.md").write_text("no markers\n")
    assert cli(["headline", str(folder), "--write", str(tmp_path / "plain.md")]) == 2
    assert cli(["headline", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "no headline section" in err[1] and "not a records folder" in err[2]
