"""Exit codes of the `medprune` command: interrupts, failed ranks, bugs, usage errors, third-party noise."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medprune.cli import interrupted_hint, main
from medprune.errors import EXIT_BUG, EXIT_INPUT, EXIT_INTERRUPTED
from tests.conftest import ROOT, write_yaml


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), extra.pop("PYTHONPATH", "")]), **extra}
    env.pop("MEDPRUNE_TRACEBACK", None)
    return env


def _default_sigint() -> None:
    """Give the child a terminal's Ctrl-C. A shell without job control (``make test &``, CI scripts)
    starts background jobs with SIGINT ignored, the child inherits that, and Python then never
    installs its KeyboardInterrupt handler: the signal would be dropped and the run finish with 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when(proc: subprocess.Popen, ready: Path, timeout: float = 240.0) -> None:
    """Send Ctrl-C (SIGINT) to ``proc`` once ``ready`` exists."""
    t0 = time.monotonic()
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{ready} never appeared")
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "run"])
def test_ctrl_c_exits_130_with_how_to_continue(tmp_path: Path, tiny_config_dict: dict, command: str) -> None:
    tiny_config_dict["optim"]["epochs"] = 30
    tiny_config_dict["compress"] = {"ratio": 0.0}
    tiny_config_dict["bench"] = {"enabled": False}
    path = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    run = Path(tiny_config_dict["runtime"]["out_dir"]) / "tiny"
    proc = subprocess.Popen([sys.executable, "-m", "medprune.cli", command, str(path)], env=_env(),
                            preexec_fn=_default_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _interrupt_when(proc, run / "checkpoints" / "last.pt")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "Traceback" not in err
    expected = f"medprune train {path} --resume" if command == "train" else f"medprune run {path}"
    assert f"medprune: interrupted — continue with `{expected}`" in err
    assert not (run / "metrics.json").exists()  # it really stopped before the end
    # and the hint is true: the command it names continues from the checkpoint and finishes
    done = subprocess.run([sys.executable, "-m", "medprune.cli", *expected.split()[1:]], env=_env(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr
    assert (run / "metrics.json").is_file()


def test_interrupted_hints_name_the_command_and_config() -> None:
    assert interrupted_hint(["train", "c.yaml", "optim.lr=1"]) == (
        "interrupted — continue with `medprune train c.yaml --resume` (the last finished epoch is in "
        "checkpoints/last.pt)")
    assert "`medprune run c.yaml`" in interrupted_hint(["run", "c.yaml", "--force", "prune"])
    assert "finished settings are reused" in interrupted_hint(["sweep", "c.yaml"])
    assert "run it again" in interrupted_hint(["export", "m.pt", "--out", "x.onnx"])


def test_keyboard_interrupt_inside_a_command_returns_130(tmp_path: Path, tiny_config_dict: dict, monkeypatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import medprune.workflows.jobs as jobs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "train", interrupted)
    path = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    assert main(["train", str(path)]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == (
        f"medprune: interrupted — continue with `medprune train {path} --resume` (the last finished epoch is "
        "in checkpoints/last.pt)")


def test_a_bug_is_one_line_with_the_traceback_in_a_file(tmp_path: Path, tiny_config_dict: dict, monkeypatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import medprune.workflows.jobs as jobs

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(jobs, "train", broken)
    monkeypatch.delenv("MEDPRUNE_TRACEBACK", raising=False)
    path = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    assert main(["train", str(path)]) == EXIT_BUG
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("medprune: internal error (a bug in medprune): TypeError: unsupported operand")
    saved = Path(err.split("saved in ")[1].split(" ")[0])
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "broken" in text
    saved.unlink()
    monkeypatch.setenv("MEDPRUNE_TRACEBACK", "1")
    with pytest.raises(TypeError):
        main(["train", str(path)])


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == EXIT_INPUT
    assert "Missing argument" in capsys.readouterr().err
    assert main(["no-such-command"]) == EXIT_INPUT


def test_third_party_logging_is_quiet_below_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0  # installs the CLI's log handler
    capsys.readouterr()
    try:
        raise ValueError("inner")
    except ValueError:
        logging.getLogger("pydicom").warning("Invalid value for VR IS: '1A'", exc_info=True)
        logging.getLogger("pydicom").error("could not decode", exc_info=True)
    logging.getLogger("medprune.data").warning("our own warning")
    err = capsys.readouterr().err.splitlines()
    assert err == ["medprune: (pydicom) could not decode", "medprune: our own warning"]


_FAULT = '''
import os
if os.environ.get("RANK") == "1" and os.environ.get("MEDPRUNE_DDP_WORKER"):
    import medprune.workflows.jobs as jobs

    def prepare_data(*args, **kwargs):
        raise RuntimeError("injected fault on rank 1")

    jobs.prepare_data = prepare_data
'''


@pytest.mark.slow
def test_failed_rank_exits_nonzero_with_one_line_per_failing_rank(tmp_path: Path, tiny_config_dict: dict) -> None:
    # a fault injected into rank 1 only, through sitecustomize (imported by every Python process)
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_FAULT)
    tiny_config_dict["optim"]["epochs"] = 1
    path = write_yaml(tmp_path / "ddp.yaml", tiny_config_dict)
    proc = subprocess.run([sys.executable, "-m", "medprune.cli", "train", str(path), "--nproc", "2"],
                          env=_env(PYTHONPATH=str(inject)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_BUG, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
    failed = [line for line in proc.stderr.splitlines() if " failed (exit code " in line]
    assert failed[0] == ("medprune: error: rank 1 failed (exit code 1): internal error RuntimeError: injected fault "
                         "on rank 1")
    assert len(failed) == len({line.split(" failed")[0] for line in failed}) <= 2  # one line per failing rank
    log = Path(tiny_config_dict["runtime"]["out_dir"]) / "tiny" / "logs" / "ddp_failure.log"
    assert f"tracebacks of the failing ranks: {log}" in proc.stderr
    assert "injected fault on rank 1" in log.read_text() and "Traceback" in log.read_text()


@pytest.mark.slow
def test_input_error_on_every_rank_exits_2(tmp_path: Path, tiny_config_dict: dict) -> None:
    from medprune.data import make_phantom

    manifest = make_phantom("thermography", tmp_path / "ph", patients=8, imbalance=1.0, views=2, size=(32, 40),
                            seed=0)
    (manifest.parent / "empty.txt").write_bytes(b"")
    header = manifest.read_text().splitlines()[0].split(",")
    row = {"path": "empty.txt", "label": "healthy", "patient_id": "PX1"}
    with manifest.open("a") as fh:
        fh.write(",".join(row.get(column, "") for column in header) + "\n")
    tiny_config_dict["data"].pop("phantom")
    tiny_config_dict["data"]["manifest"] = str(manifest)
    path = write_yaml(tmp_path / "ddp.yaml", tiny_config_dict)
    proc = subprocess.run([sys.executable, "-m", "medprune.cli", "train", str(path), "--nproc", "2"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_INPUT, proc.stderr[-3000:]
    failed = sorted(line for line in proc.stderr.splitlines() if " failed (exit code " in line)
    assert [line.split(": ")[2].split(" failed")[0] for line in failed] == ["rank 0", "rank 1"]
    assert all("1 bad sample(s)" in line and "empty.txt" in line and "zero-byte file" in line for line in failed)
    assert "Traceback" not in proc.stderr
