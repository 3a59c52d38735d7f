"""benchmarks/gpu_check.py's machinery, on a tiny architecture folder (configs only, like the SD ones it ships)."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
TINY = Path(__file__).parent / "fixtures" / "architectures"


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_check_runs_every_stage_and_writes_one_table(tmp_path, capsys):
    out = tmp_path / "table.md"
    assert gpu_check().main(["--device", "cpu", "--quick", "--architectures", str(TINY), "--out", str(out)]) == 0
    table = out.read_text()
    assert table in capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| tiny |")).strip("| ").split(" | ")
    assert row[-1] == "ok" and row[-2] == "2/2"  # status; the loss fell at both steps
    assert row[-3] == "0.0e+00"  # eta = 0 replays stage 1 bit for bit on the CPU
    # UNet calls: inversion 2 + 2 x (uncond + 2 evaluations); the edit pass (faithful mode) replays eta 0 in 2 x 2
    # calls and samples the other etas beside their reconstruction branch in one fused call per step; replay 2 x 2
    assert row[9] == "8/6/4"


def test_unknown_architecture_is_one_line_and_exit_2(capsys):
    assert gpu_check().main(["--device", "cpu", "--quick", "--architectures", str(TINY), "--arch", "sd9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_check: no architecture sd9") and err.count("\n") == 1
