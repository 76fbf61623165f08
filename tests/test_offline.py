"""Offline, proven: in a network namespace with no way out (`unshare -n`, only loopback up, which
Jupyter's kernel needs), the package trains and generates and a chapter executes end to end.
Skipped, with the reason, where the machine forbids namespaces."""

from __future__ import annotations

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
    chapter = _offline([sys.executable, "-m", "minillm", "course", "run", "03", "--output-dir",
                        str(tmp_path / "course")], timeout=600)
    assert chapter.returncode == 0, (chapter.stdout + chapter.stderr)[-3000:]
    assert (tmp_path / "course" / "03_transformer.ipynb").is_file()
