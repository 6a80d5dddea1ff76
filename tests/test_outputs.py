"""Outputs that never destroy anything: the input is never the output, FIFOs and links are written
in place, stale temporaries of killed writers go, one training per run folder, a closed pipe ends
quietly, and n-best output has n lines per input, blank ones included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_mt.errors import LstmMtError
from lstm_mt.files import FolderLock, atomic_write, check_output_file, remove_stale_temporaries, write_output
from lstm_mt.translate import main as translate

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_output_that_is_the_input_is_refused_also_through_links(tiny_checkpoint, tmp_path):
    source = tmp_path / "in.de"
    source.write_text("Ein Hund.\n\nZwei Männer.\n", encoding="utf-8")
    (tmp_path / "link.de").symlink_to(source)
    os.link(source, tmp_path / "hard.de")
    before = source.read_bytes()
    for output in (source, tmp_path / "link.de", tmp_path / "hard.de"):
        with pytest.raises(LstmMtError, match=f"output={output}: is the input"):
            translate([f"checkpoint={tiny_checkpoint.path}", f"input={source}", f"output={output}", "progress=false"])
    assert source.read_bytes() == before


def test_symlink_and_fifo_outputs_are_written_in_place(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("old\n")
    (tmp_path / "link").symlink_to(target)
    write_output(tmp_path / "link", b"new\n")
    assert (tmp_path / "link").is_symlink() and target.read_text() == "new\n"

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    write_output(fifo, b"through the pipe\n")
    assert reader.communicate(timeout=30)[0] == b"through the pipe\n"
    assert fifo.is_fifo()


def test_regular_output_is_replaced_atomically_and_a_folder_is_refused(tmp_path):
    write_output(tmp_path / "out.txt", b"one\n")
    write_output(tmp_path / "out.txt", b"two\n")
    assert (tmp_path / "out.txt").read_text() == "two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with pytest.raises(LstmMtError, match="is a folder"):
        check_output_file(tmp_path, "output")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LstmMtError, match="is a file, not a folder"):
        check_output_file(tmp_path / "file" / "out.txt", "output")


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / f".step_40.pt.tmp-{_dead_pid()}-0a1b2c3d"
    live = tmp_path / f".step_60.pt.tmp-{os.getpid()}-0a1b2c3d"
    unrelated = tmp_path / ".hidden.tmp-notapid"
    for path in (dead, live, unrelated):
        path.write_bytes(b"x" * 100)
    with atomic_write(tmp_path / "step_80.pt") as handle:
        assert Path(handle.name).name.startswith(f".step_80.pt.tmp-{os.getpid()}-")
        handle.write(b"data")
    assert not dead.exists() and live.exists() and unrelated.exists()
    assert remove_stale_temporaries(tmp_path) == []


def test_a_save_killed_mid_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    script = (
        "import os, sys\n"
        "from lstm_mt.files import atomic_write\n"
        f"with atomic_write({str(tmp_path / 'big.pt')!r}) as handle:\n"
        "    handle.write(b'x' * 1_000_000); handle.flush(); print(handle.name, flush=True); os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env())
    assert result.returncode == -9
    left = Path(result.stdout.strip())
    assert left.exists()
    with atomic_write(tmp_path / "other.pt") as handle:
        handle.write(b"y")
    assert not left.exists() and not (tmp_path / "big.pt").exists()


def test_a_second_training_in_a_locked_run_folder_is_refused(tmp_path):
    with FolderLock(tmp_path, "a training"):
        holder = f"pid {os.getpid()}"
        script = f"from lstm_mt.files import FolderLock\nFolderLock({str(tmp_path)!r}, 'a training').__enter__()\n"
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env())
        assert result.returncode != 0 and f"a training already runs there ({holder})" in result.stderr
    with FolderLock(tmp_path, "a training"):  # released: free again
        pass


def test_nbest_gives_exactly_n_lines_per_input_blank_lines_included(tiny_checkpoint, tmp_path, capsys):
    source = tmp_path / "in.de"
    source.write_text("Ein Hund.\n\n   \nZwei Männer.\n", encoding="utf-8")
    translate([f"checkpoint={tiny_checkpoint.path}", f"input={source}", "beam_size=3", "nbest=3", "progress=false"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ||| ")[0] for line in lines] == [str(i) for i in range(4) for _ in range(3)]


def test_closed_stdout_ends_quietly(tiny_checkpoint, tmp_path):
    source = tmp_path / "many.de"
    source.write_text("Ein Hund läuft über die Wiese.\n" * 3000, encoding="utf-8")
    command = [sys.executable, "-m", "lstm_mt", "translate", f"checkpoint={tiny_checkpoint.path}"]
    command += [f"input={source}", "beam_size=1", "progress=false"]
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.readline()
    writer.stdout.close()  # the reader leaves, like `| head -1`
    stderr = writer.stderr.read().decode()
    assert writer.wait(timeout=300) in (0, 141)
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}
