"""Execute the walkthrough notebooks at full settings and save them with their outputs.

The notebooks are documents: they ship executed, plots included, so they read without running.
Run from the repository root after a change that alters what they show::

    .venv/bin/python notebooks/execute.py                 # every notebook (several minutes on 2 cores)
    .venv/bin/python notebooks/execute.py compress_and_compare.ipynb

Their runs go to ``runs/notebook_*`` (never ``runs/thermography_demo``); a previous notebook run is
reused stage by stage, as ``medprune run`` does — delete ``runs/notebook_*`` for a fresh one.
The test suite executes them separately on tiny settings (``MEDPRUNE_NOTEBOOK_TINY=1``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path) -> float:
    """Run ``path`` top to bottom in the repository root and write it back with its outputs."""
    t0 = time.perf_counter()
    nb = nbformat.read(path, as_version=4)
    env_tiny = os.environ.pop("MEDPRUNE_NOTEBOOK_TINY", None)
    try:
        NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        if env_tiny is not None:
            os.environ["MEDPRUNE_NOTEBOOK_TINY"] = env_tiny
    nbformat.write(nb, path)
    return time.perf_counter() - t0


def main(names: list[str]) -> None:
    paths = [ROOT / "notebooks" / n for n in names] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        print(f"{path.name}: executed and saved in {execute(path):.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
