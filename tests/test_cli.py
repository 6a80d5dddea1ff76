"""Tests for the `lstm-mt` command itself: version, usage, and that every entry point reaches its subcommand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import lstm_mt
from lstm_mt.cli import SUBCOMMANDS

REPO = Path(__file__).resolve().parents[1]


def lstm_mt_command(*args: str, module: str = "lstm_mt") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_is_the_package_version(flag):
    result = lstm_mt_command(flag)
    assert (result.returncode, result.stdout) == (0, f"lstm-mt {lstm_mt.__version__}\n")
    assert lstm_mt.__version__.count(".") == 2 and all(part.isdigit() for part in lstm_mt.__version__.split("."))


def test_usage_lists_every_subcommand_and_an_unknown_one_is_refused():
    shown = lstm_mt_command("--help")
    assert shown.returncode == 0 and "--version" in shown.stdout
    assert all(f"  {name} " in shown.stdout for name in SUBCOMMANDS)
    unknown = lstm_mt_command("transalte")
    assert unknown.returncode == 2 and "unknown command 'transalte'" in unknown.stderr


def test_license_file_matches_the_declared_license():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License\n")


def _run_with_validations(folder: Path, bleus: list[float]) -> Path:
    folder.mkdir()
    lines = [json.dumps({"kind": "valid", "step": 10 * (k + 1), "bleu": bleu}) for k, bleu in enumerate(bleus)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    "entry", [["lstm_mt", "recipe"], ["lstm_mt.recipe"]], ids=["lstm-mt recipe", "-m lstm_mt.recipe"]
)
def test_recipe_is_a_subcommand_and_the_old_module_form_still_works(tmp_path, entry):
    first = _run_with_validations(tmp_path / "run", [1.0, 5.0])
    rerun = _run_with_validations(tmp_path / "rerun", [1.0, 6.0])
    module, *subcommand = entry
    result = lstm_mt_command(*subcommand, "compare", str(first), str(rerun), module=module)
    assert result.returncode == 1, result.stderr  # 5.0 vs 6.0 is more than the 0.5 BLEU tolerance
    assert "2 validations compared" in result.stdout and "NOT reproduced" in result.stdout
    helped = lstm_mt_command(*subcommand, "--help", module=module)
    assert helped.returncode == 0 and "tune" in helped.stdout and "compare" in helped.stdout
