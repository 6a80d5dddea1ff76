"""Installing lstm-mt as users do: a wheel (not an editable checkout) in a fresh virtual environment,
used from a folder outside the repository, with the configs shipped inside the package and the
user's own config folder beside them."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from lstm_mt.data import MIRROR_ENV

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get(MIRROR_ENV) or REPO.parent / "shared" / "data")
SOURCES = ["lstm_mt", "pyproject.toml", "README.md", "LICENSE"]  # what a source distribution holds
TINY_RUN = [
    "data.spm.vocab_size=500",
    "data.spm.max_sentences=5000",
    "model.emb_size=32",
    "model.encoder_hidden=32",
    "model.decoder_hidden=64",
    "model.attentional_size=32",
    "model.attention_hidden=32",
    "train.max_train_examples=200",
    "train.max_tokens=1024",
    "train.max_steps=2",
    "train.num_threads=1",
    "train.quiet=true",
]
USER_EXPERIMENT = """\
# @package _global_
# a user's experiment file, outside the package
defaults:
  - override /train: mine
train:
  lr: 4.0e-3
"""
USER_TRAIN_PRESET = """\
defaults:
  - default
  - _self_
max_epochs: 7
"""


def build_wheel(folder: Path) -> Path:
    """A wheel built from a copy of the sources (the checkout's stray files cannot leak into it)."""
    source = folder / "source"
    source.mkdir(parents=True)
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", folder, source]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    (wheel,) = folder.glob("lstm_mt-*.whl")
    return wheel


def fresh_venv(folder: Path, wheel: Path) -> Path:
    """A new virtual environment holding the wheel; torch and the other dependencies are borrowed
    from this interpreter's site-packages by a .pth line (which, unlike site-packages itself, does
    not run the editable install's hooks there), behind the venv's own site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True, timeout=120)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "borrowed_dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    return folder / "bin"


@pytest.mark.slow
@pytest.mark.skipif(not (MIRROR / "multi30k" / "raw").is_dir(), reason=f"no data mirror at {MIRROR}")
def test_a_wheel_in_a_fresh_venv_trains_translates_and_evaluates_from_anywhere(tmp_path):
    bin_dir = fresh_venv(tmp_path / "venv", build_wheel(tmp_path / "wheel"))
    work = tmp_path / "elsewhere"  # outside the repository: nothing can be found relative to it
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", MIRROR_ENV)}
    env.update(OMP_NUM_THREADS="1", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")

    def lstm_mt(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["lstm-mt", *args], cwd=work, env=env, input=stdin, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"lstm-mt {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done

    where = subprocess.run(
        [bin_dir / "python", "-c", "import lstm_mt; print(lstm_mt.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where.stdout
    assert lstm_mt("--version").stdout.startswith("lstm-mt ")
    assert "emb_size: 128" in lstm_mt("train", "--cfg", "job").stdout

    user = work / "my_configs"  # the user's own experiment file and train preset, beside the packaged ones
    (user / "experiment").mkdir(parents=True)
    (user / "train").mkdir()
    (user / "experiment" / "mine.yaml").write_text(USER_EXPERIMENT)
    (user / "train" / "mine.yaml").write_text(USER_TRAIN_PRESET)
    for found_by in (["--config-dir", "my_configs"], [f"hydra.searchpath=[file://{user}]"]):
        shown = lstm_mt("train", *found_by, "+experiment=mine", "--cfg", "job").stdout
        assert "lr: 0.004" in shown and "max_epochs: 7" in shown and "label_smoothing: 0.1" in shown

    data = [f"data.mirror={MIRROR}", "data.cache_dir=cache"]
    lstm_mt("train", *data, *TINY_RUN, "hydra.run.dir=run")
    checkpoint = work / "run" / "checkpoints" / "best.pt"
    assert checkpoint.is_file() and (work / "cache" / "spm").is_dir()

    sources = ["Ein Hund läuft.", "Zwei Männer spielen Fußball."]
    translated = lstm_mt("translate", f"checkpoint={checkpoint}", stdin="\n".join(sources) + "\n").stdout
    assert len(translated.splitlines()) == len(sources)

    for side in ("de", "en"):
        with gzip.open(MIRROR / "multi30k" / "raw" / f"val.{side}.gz", "rt", encoding="utf-8") as lines:
            (work / f"val20.{side}").write_text("".join(line for _, line in zip(range(20), lines)))
    report = lstm_mt("evaluate", f"checkpoint={checkpoint}", "src=[val20.de]", "ref=[val20.en]", "output_dir=eval")
    assert "BLEU" in report.stdout and (work / "eval" / "report.json").is_file()
