"""Every bad input gets one clear line: a table of bad configs, paths and files across all commands.

Each case runs the command's ``main(argv)`` in the test process and must stop with one
`LstmMtError` line that names the key or file, before any work, leaving no output file behind.
A representative few run as real processes: exit status 2, one ``error:`` line, no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_mt.average import main as average
from lstm_mt.bench import main as bench
from lstm_mt.errors import LstmMtError
from lstm_mt.evaluate import main as evaluate
from lstm_mt.inspection import main as inspect
from lstm_mt.train import main as train
from lstm_mt.translate import main as translate

ROOT = Path(__file__).resolve().parents[1]

MODEL_SIZES = ["emb_size", "encoder_hidden", "encoder_layers", "decoder_hidden", "decoder_layers", "attention_hidden"]
TRAIN_CASES = (
    [(f"model.{key}={value}", f"model.{key}={value}") for key in MODEL_SIZES for value in (0, -4)]
    + [(f"model.{key}={value}", f"model.{key}") for key in ("dropout", "embedding_dropout") for value in (1.0, -0.1)]
    + [("model.attentional_size=0", "model.attentional_size=0")]
    + [(f"train.lr={value}", "train.lr") for value in ("0", "-1", "nan", "inf")]
    + [("train.weight_decay=-1", "train.weight_decay"), ("train.weight_decay=nan", "train.weight_decay")]
    + [("train.betas=[2.0,0.5]", "train.betas[0]"), ("train.betas=[0.9,1.0]", "train.betas[1]")]
    + [(f"train.label_smoothing={v}", "train.label_smoothing") for v in ("1.0", "-0.1", "nan")]
    + [(f"train.plateau_factor={v}", "train.plateau_factor") for v in ("0", "5", "1.0", "nan")]
    + [("train.min_lr=-1", "train.min_lr"), ("train.clip_norm=-1", "train.clip_norm"), ("train.clip_norm=inf", "")]
    + [(f"train.{key}=0", f"train.{key}=0") for key in ("accumulate", "max_tokens", "keep_last", "log_every")]
    + [(f"train.{key}=-1", f"train.{key}=-1") for key in ("max_epochs", "max_steps", "patience", "valid_every")]
    + [(f"train.{key}=-1", f"train.{key}=-1") for key in ("save_every", "warmup_steps", "num_threads")]
    + [("train.plateau_patience=-1", "train.plateau_patience"), ("train.max_train_examples=0", "max_train")]
    + [("train.max_minutes=-1", "train.max_minutes"), ("train.nonfinite=ignore", "train.nonfinite")]
    + [("seed=-1", "seed=-1"), ("seed=99999999999", "seed")]
    + [("data.max_len=0", "data.max_len=0"), ("data.max_len_ratio=0", "data.max_len_ratio")]
    + [("data.max_len_ratio=nan", "data.max_len_ratio"), ("data.spm.vocab_size=0", "data.spm.vocab_size")]
    + [("data.spm.character_coverage=0", "character_coverage"), ("data.spm.character_coverage=1.5", "coverage")]
    + [("data.spm.max_sentences=0", "data.spm.max_sentences"), ("data.tatoeba.valid_fraction=1.0", "valid_fraction")]
    + [("data.tatoeba.test_fraction=-0.1", "data.tatoeba.test_fraction"), ("data.tatoeba.seed=-1", "tatoeba.seed")]
    + [("decoding.beam_sizes=[5,0]", "decoding.beam_sizes[1]"), ("decoding.alphas=[nan]", "decoding.alphas[0]")]
    + [("train.schedule=cosine", "train.schedule"), ("train.precision=fp64", "train.precision")]
    + [("train.early_stop_metric=ter", "train.early_stop_metric"), ("train.optimizer=sgd", "train.optimizer")]
)
SEARCH_CASES = (
    [(f"beam_size={v}", f"beam_size={v}") for v in (0, -1)]
    + [(f"alpha={v}", "alpha") for v in ("nan", "inf", "-1")]
    + [(f"max_len_a={v}", "max_len_a") for v in ("nan", "inf", "-0.5")]
    + [("max_len_b=-1", "max_len_b"), ("nbest=0", "nbest=0"), ("nbest=9", "nbest=9")]
    + [(f"max_tokens={v}", f"max_tokens={v}") for v in (0, -1)]
    + [("max_input_tokens=0", "max_input_tokens"), ("device=banana", "device=banana")]
)


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.de").write_text("Ein Hund.\n", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("x\n")
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    (tmp_path / "empty").write_text("")
    (tmp_path / "ckdir").mkdir()
    (tmp_path / "ckdir" / "gone.pt").symlink_to(tmp_path / "nowhere.pt")
    return tmp_path


def _refused(command, argv: list[str], named: str, folder: Path) -> None:
    before = _listing(folder)
    with pytest.raises(LstmMtError) as error:
        command(argv)
    message = str(error.value)
    assert "\n" not in message and named in message, message
    assert _listing(folder) == before, "a refused command left files behind"


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("override, named", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_refuses(workdir, override, named):
    _refused(train, [override, f"hydra.run.dir={workdir / 'run'}"], named or override.split("=")[0], workdir)


@pytest.mark.parametrize("override, named", SEARCH_CASES, ids=[c[0] for c in SEARCH_CASES])
def test_translate_refuses_search_options(workdir, tiny_checkpoint, override, named):
    argv = [f"checkpoint={tiny_checkpoint.path}", "input=in.de", "output=out.en", "beam_size=5", override]
    if override.startswith("beam_size"):
        argv.remove("beam_size=5")
    _refused(translate, argv, named, workdir)


@pytest.mark.parametrize("override, named", SEARCH_CASES[:-1], ids=[c[0] for c in SEARCH_CASES[:-1]])
def test_evaluate_refuses_search_options(workdir, tiny_checkpoint, override, named):
    argv = [f"checkpoint={tiny_checkpoint.path}", "src=[in.de]", "ref=[in.de]", "output_dir=ev", "beam_size=5"]
    if override.startswith("nbest"):
        named = "nbest"
    _refused(evaluate, [*argv, override], named, workdir)


PATH_CASES = [
    (translate, ["input=in.de", "output=in.de"], "output=in.de: is the input"),
    (translate, ["input=in.de", "output=folder"], "output=folder: is a folder"),
    (translate, ["input=in.de", "output=a_file/out.en"], "a_file is a file"),
    (translate, ["input=in.de", "attention_plots=a_file"], "attention_plots=a_file: is a file"),
    (translate, ["input=missing.de"], "missing.de"),
    (translate, ["input=folder"], "folder"),
    (evaluate, ["src=[in.de]", "ref=[in.de]", "output_dir=a_file"], "output_dir=a_file: is a file"),
    (evaluate, ["src=[in.de]", "ref=[missing.en]"], "missing.en"),
    (inspect, ["text=Hallo", "output_dir=a_file"], "output_dir=a_file: is a file"),
    (inspect, ["text=Hallo", "top_k=0"], "top_k=0"),
    (inspect, ["text=Hallo", "max_sentences=0"], "max_sentences=0"),
]


@pytest.mark.parametrize("command, argv, named", PATH_CASES, ids=[" ".join(c[1]) for c in PATH_CASES])
def test_paths_of_the_wrong_kind_are_refused_before_the_work(workdir, tiny_checkpoint, command, argv, named):
    _refused(command, [f"checkpoint={tiny_checkpoint.path}", *argv], named, workdir)


CHECKPOINT_CASES = [
    (translate, ["checkpoint=text.pt", "input=in.de", "output=o.en"], "text.pt"),
    (translate, ["checkpoint=missing.pt", "input=in.de", "output=o.en"], "missing.pt: checkpoint not found"),
    (translate, ["checkpoint=folder", "input=in.de", "output=o.en"], "folder: not a checkpoint file"),
    (evaluate, ["checkpoint=text.pt", "src=[in.de]", "ref=[in.de]", "output_dir=ev"], "text.pt"),
    (inspect, ["checkpoint=text.pt", "text=Hallo", "output_dir=ins"], "text.pt"),
    (average, ["inputs=[text.pt]", "output=avg.pt"], "text.pt"),
    (average, ["dir=ckdir", "last=1", "output=avg.pt"], "gone.pt: a link to"),
    (average, ["dir=missing", "last=1", "output=avg.pt"], "missing"),
    (average, ["inputs=[text.pt]", "output=folder"], "output=folder: is a folder"),
    (average, ["inputs=[text.pt]", "last=0", "output=avg.pt"], "last=0"),
    (evaluate, ["hyp=[empty]", "ref=[empty]"], "empty: no lines to score"),
    (evaluate, ["hyp=[in.de]", "ref=[empty]"], "empty"),
]


@pytest.mark.parametrize("command, argv, named", CHECKPOINT_CASES, ids=[" ".join(c[1]) for c in CHECKPOINT_CASES])
def test_bad_checkpoints_and_files_are_one_line(workdir, command, argv, named):
    _refused(command, argv, named, workdir)


@pytest.mark.parametrize("argv, named", [(["--repeats", "-1"], "--repeats=-1"), (["--device", "banana"], "banana")])
def test_bench_refuses(argv, named):
    with pytest.raises(LstmMtError, match=named):
        bench(argv)


def test_the_table_is_large():
    count = len(TRAIN_CASES) + 2 * len(SEARCH_CASES) - 1 + len(PATH_CASES) + len(CHECKPOINT_CASES) + 2
    assert count >= 100, count


@pytest.mark.parametrize(
    "argv, named",
    [
        (["train", "train.lr=inf"], "train.lr=inf"),
        (["translate", "checkpoint=text.pt", "input=in.de", "output=o.en"], "text.pt"),
        (["average", "inputs=[text.pt]", "output=folder"], "output=folder"),
        (["bench", "--repeats", "-1"], "--repeats"),
        (["train", "hydra.run.dir=a_file"], "hydra.run.dir=a_file"),
    ],
)
def test_as_processes_exit_2_with_one_line_and_no_traceback(workdir, argv, named):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "lstm_mt", *argv], capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr
