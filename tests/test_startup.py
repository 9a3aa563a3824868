"""Start-up cost of the `mixkit` command: building its parser, `--help` of every command and `mixkit models`
import no heavy library (torch alone takes ~1 s to import). Only `mixkit train STAGE --help` may: it prints the
Trainer's options, which are `transformers`' own.

Asserting imports rather than seconds keeps the test stable on a busy CI machine; the wall time of
`python -m mixkit.cli --help` is printed for the record (`pytest -s`; `benchmarks/startup.py` measures it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # `python -c` puts the working folder first on sys.path
HEAVY = ("torch", "transformers", "huggingface_hub", "PIL", "numpy", "safetensors", "tokenizers")
# Every command and group whose `--help` a new user may type first (`mixkit train STAGE --help` aside).
HELP_COMMANDS = (
    [], ["models"], ["predict"], ["predict", "caption"], ["predict", "vqa"], ["convert"], ["convert", "lavis"],
    ["score"], ["score", "vqa"], ["score", "caption"], ["eval"], ["eval", "vqa"], ["eval", "caption"],
    ["eval", "retrieval"], ["data"], ["data", "check"], ["data", "shards"], ["train"], ["demo"],
    ["serve"],
)

_PROBE = """
import contextlib, io, json, sys
from mixkit.cli import build_parser, main
build_parser()
codes = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(main(argv))
        except SystemExit as exit_info:
            codes.append(exit_info.code)
print(json.dumps({"codes": codes, "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def _probe(commands: list[list[str]]) -> dict[str, list]:
    result = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(commands), json.dumps(HEAVY)],
                            capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(result.stdout)


def test_help_and_models_import_no_heavy_library() -> None:
    commands = [[*command, "--help"] for command in HELP_COMMANDS] + [["models"]]
    found = _probe(commands)
    assert found["heavy"] == [], f"building the parser or --help imported {found['heavy']}"
    # --help exits 0; `mixkit train --help` without a stage is a usage error (2), as before; `models` returns 0.
    expected = [2 if command == ["train"] else 0 for command in HELP_COMMANDS] + [0]
    assert found["codes"] == expected


def test_train_stage_help_may_import_transformers() -> None:
    """The one exception, checked so that the probe above is known to see imports at all."""
    found = _probe([["train", "blip2-stage1", "--help"]])
    assert found["codes"] == [0] and "transformers" in found["heavy"]


def test_print_help_wall_time(capsys) -> None:
    """`python -m mixkit.cli --help` as a user runs it; printed, not asserted (CI machines are noisy)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mixkit.cli", "--help"], capture_output=True, check=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    with capsys.disabled():
        print(f"\n`python -m mixkit.cli --help`: median {sorted(times)[1]:.3f} s over 3 runs")
