"""Sessions: `nox -s lint tests regress` (CI runs exactly this), `nox -s bench` (the default suite
and its HTML report), `nox -s report` (the reports of the committed GPU results).

Every session installs the CPU wheel of torch first, so that nothing pulls a multi-GB CUDA build;
on a GPU machine run the suite with `python -m bench run SUITE` in an environment with CUDA torch.
"""

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "regress"]
nox.options.reuse_existing_virtualenvs = True

TORCH_CPU = "torch==2.13.0"


def install(session: nox.Session, extras: str) -> None:
    session.install(TORCH_CPU)
    session.install("-e", f".[{extras}]")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite on the CPU (JAX on CPU; the official code and transformers as oracles)."""
    install(session, "jax,peers,report,test,triton")
    session.run("pytest", *session.posargs, env={"JAX_PLATFORMS": "cpu"})


@nox.session
def bench(session: nox.Session) -> None:
    """The default suite: `smoke` (tiny presets) without a GPU, `default` on one; then its report.
    Triton is installed too: without a GPU its interpreter runs our kernels (and with them the
    optimized torch model) on the CPU."""
    install(session, "jax,peers,report,triton")
    session.run("python", "-m", "bench", "run", *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """reports/DEVICE-SUITE.html for every committed results/DEVICE/SUITE.jsonl (or posargs)."""
    install(session, "report")
    session.run("python", "-m", "bench", "report", *(session.posargs or ["--all"]))


@nox.session
def regress(session: nox.Session) -> None:
    """The kernel-speed gate (bench/regress.py): pytest-benchmark on this device, then the check
    against its stored baseline and the same-run ratios. Arguments go to the check:
    `-- --save-baseline` stores this run as the device's baseline, `-- --threshold 0.05`."""
    install(session, "jax,peers,test,triton")
    # the committed GPU kernel records were measured at or after the last change to their kernels
    session.run("python", "-m", "bench.regress", "fresh")
    out = "results/local/regress-run.json"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    # tests/conftest.py puts JAX on the CPU unless JAX_PLATFORMS is set: on a GPU, name it
    env = {"JAX_PLATFORMS": "cuda,cpu" if shutil.which("nvidia-smi") else "cpu"}
    session.run(
        "pytest", "-q", "-p", "no:cacheprovider", "--regress", "tests/regress",
        f"--benchmark-json={out}", "--benchmark-save-data", env=env,
    )  # fmt: skip
    session.run("python", "-m", "bench.regress", "check", out, *session.posargs, env=env)
