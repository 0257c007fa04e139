"""The atomic writer every file of the plugin goes through: complete files or the previous file, never a
partial one, and failures that say what was needed and what was free."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tfclip_plugin.files.atomic import WriteFailedError, atomic_write, describe_write_failure, write_text
from tfclip_plugin.files.checkpoint_file import checkpoint_path, load_checkpoint, save_checkpoint
from tfclip_plugin.files.results import load_results, write_results


def test_text_and_binary_writes_replace_the_file_and_leave_nothing_else(tmp_path):
    path = str(tmp_path / "deep" / "folder" / "page.html")
    write_text(path, "first")
    with atomic_write(path, "w") as stream:
        stream.write("second")
    assert open(path, encoding="utf-8").read() == "second"
    with atomic_write(path, "wb") as stream:
        stream.write(b"\x00third")
    assert open(path, "rb").read() == b"\x00third"
    assert os.listdir(tmp_path / "deep" / "folder") == ["page.html"]
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"):
        with atomic_write(path, "a"):
            pass


def test_an_exception_inside_the_block_keeps_the_previous_file(tmp_path):
    path = str(tmp_path / "results.json")
    write_results(str(tmp_path), {"mAP": 0.5})
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_write(path, "w") as stream:
            stream.write('{"mAP": 0.')
            raise RuntimeError("interrupted")
    assert load_results(str(tmp_path)) == {"mAP": 0.5} and os.listdir(tmp_path) == ["results.json"]


def test_checkpoint_names_are_defined_once(tmp_path):
    assert checkpoint_path("run", "latest") == os.path.join("run", "model", "checkpoint-latest.pth.tar")
    assert checkpoint_path("run", "epoch", 12) == os.path.join("run", "model", "model.pth.tar-12")
    assert checkpoint_path("run", "best") == os.path.join("run", "model", "model-best.pth.tar")
    with pytest.raises(ValueError, match="checkpoint kind must be one of latest, epoch, best; got 'last'"):
        checkpoint_path("run", "last")


def test_the_failure_message_names_path_cause_sizes_and_free_space(tmp_path):
    error = OSError(28, "No space left on device")
    message = describe_write_failure(str(tmp_path / "model.pth"), error, written=3 << 20, size_hint=400 << 20)
    assert message.startswith(f"cannot write {tmp_path / 'model.pth'}: no space left on the device; 3.0 MiB written "
                              "before the failure; about 400.0 MiB needed; ")
    assert f" free in {tmp_path}. The previous file at that path, if any, is unchanged." in message


def test_a_file_size_limit_stops_the_write_with_a_clear_error_and_keeps_the_old_checkpoint(tmp_path):
    """RLIMIT_FSIZE (Python ignores SIGXFSZ, so writes past it fail with EFBIG) stands in for a full disk."""
    path = str(tmp_path / "model" / "checkpoint-latest.pth.tar")
    save_checkpoint({"epoch": 1, "w": torch.ones(4)}, path)
    script = textwrap.dedent(f"""
        import json, resource, sys
        import torch
        from tfclip_plugin.files.atomic import WriteFailedError
        from tfclip_plugin.files.checkpoint_file import save_checkpoint
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            save_checkpoint({{"epoch": 2, "w": torch.zeros(1 << 20)}}, {path!r})
        except WriteFailedError as exc:
            print(json.dumps({{"type": type(exc).__name__, "errno": exc.errno, "message": str(exc)}}))
            sys.exit(3)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    failure = json.loads(done.stdout)
    assert failure["type"] == "WriteFailedError" and failure["errno"] == 27  # EFBIG
    assert failure["message"].startswith(f"cannot write {path}: file size limit exceeded; ")
    assert "about 4.0 MiB needed" in failure["message"] and " free in " in failure["message"]
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path / "model") == ["checkpoint-latest.pth.tar"]
    assert issubclass(WriteFailedError, OSError)
