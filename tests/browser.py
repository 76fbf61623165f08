"""Driving JupyterLab and the web book in a real browser (Playwright on the system Chromium).

Shared by tests/test_browser.py and tests/test_book.py: `chromium_path` finds the browser the
setup installed (`make venv` installs Debian's `chromium` when it is missing), `JupyterLab`
starts a server on 127.0.0.1 with a token over a scratch copy of the chapters, and `Lab` opens a
notebook, runs all its cells or some of them, and reads its outputs the way a learner sees them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from minillm.distributed.launch import free_port

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = [os.environ.get("MINILLM_CHROMIUM", ""), "/usr/lib/chromium/chromium",
              "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]


def chromium_path() -> str | None:
    """The Chromium binary to drive (MINILLM_CHROMIUM overrides), or None."""
    for path in CANDIDATES:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    return None


class JupyterLab:
    """`jupyter lab` over a scratch folder holding a copy of the chapters.

    Notebooks are not windowed (every cell is in the page, so none has to be scrolled into
    existence) and autosave writes only to the scratch copy.
    """

    def __init__(self, root: Path):
        self.root = root
        shutil.copytree(REPO / "chapters", root / "chapters",
                        ignore=shutil.ignore_patterns("conftest.py", "__pycache__"))
        settings = root / "settings" / "@jupyterlab" / "notebook-extension"
        settings.mkdir(parents=True)
        (settings / "tracker.jupyterlab-settings").write_text(
            json.dumps({"windowingMode": "none"}))
        news = root / "settings" / "@jupyterlab" / "apputils-extension"
        news.mkdir(parents=True)
        (news / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MINILLM_NBVAL_NATIVE": "1", "JUPYTER_PLATFORM_DIRS": "1"}
        self.log = open(root / "jupyter.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
             "--ip=127.0.0.1", f"--port={self.port}", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={root / 'settings'}",
             f"--LabApp.workspaces_dir={root / 'workspaces'}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.api("status")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter lab did not start: "
                                       + (root / "jupyter.log").read_text()[-2000:]) from None
                time.sleep(0.5)

    def api(self, path: str):
        req = urllib.request.Request(f"{self.url}/api/{path}",
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def kernel_state(self, notebook: str) -> str | None:
        for s in self.api("sessions"):
            if s.get("path", "").endswith(notebook):
                return s["kernel"]["execution_state"]
        return None

    def delete(self, path: str) -> None:
        req = urllib.request.Request(f"{self.url}/api/{path}", method="DELETE",
                                     headers={"Authorization": f"token {self.token}"})
        urllib.request.urlopen(req, timeout=10).close()

    def close(self) -> None:
        for s in self.api("sessions"):
            self.delete(f"sessions/{s['id']}")
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Lab:
    """One notebook open in a Playwright page."""

    def __init__(self, lab: JupyterLab, page, notebook: str):
        self.lab, self.page, self.notebook = lab, page, notebook
        # a workspace of its own, reset: only this notebook is open in the page
        space = Path(notebook).stem
        page.goto(f"{lab.url}/lab/workspaces/{space}/tree/chapters/{notebook}?reset&"
                  f"token={lab.token}")
        page.wait_for_selector(".jp-Notebook:visible .jp-Cell", timeout=120_000)
        self.wait_idle(120)

    def wait_idle(self, timeout: float, settle: float = 1.5) -> None:
        """Until the kernel reports idle for `settle` seconds and no cell shows [*]."""
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            busy = self.lab.kernel_state(self.notebook) != "idle" or self.page.locator(
                ".jp-InputPrompt", has_text="[*]").count() > 0
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > settle:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{self.notebook}: the kernel was still busy after {timeout:.0f} s")

    def run_cells(self, positions: list[int], timeout: float) -> None:
        """Run the cells at `positions` (indices in the notebook), in that order: select each
        and press Ctrl+Enter, as a learner does."""
        cells = self.page.locator(".jp-Notebook:visible .jp-Cell")
        for i in positions:
            cells.nth(i).locator(".jp-InputPrompt").first.click()
            self.page.keyboard.press("Control+Enter")
        time.sleep(2)
        self.wait_idle(timeout)

    def run_all(self, timeout: float) -> None:
        self.page.locator(".jp-Notebook:visible").first.click()
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        self.page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        time.sleep(2)
        self.wait_idle(timeout)

    def save(self) -> dict:
        """Save through the page (Ctrl+S) and return the notebook JSON the server wrote."""
        self.page.locator(".jp-Notebook:visible").first.click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+s")
        time.sleep(2)
        return json.loads((self.lab.root / "chapters" / self.notebook).read_text())

    def error_texts(self) -> list[str]:
        """Tracebacks shown in the page."""
        texts = self.page.locator(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
        ).all_inner_texts()
        return [t for t in texts if "Traceback (most recent call last)" in t]

    def shutdown(self) -> None:
        """Stop this notebook's kernel (the server keeps one per open notebook)."""
        for s in self.lab.api("sessions"):
            if s.get("path", "").endswith(self.notebook):
                self.lab.delete(f"sessions/{s['id']}")

    def widget_cells(self):
        return self.page.locator(".jp-CodeCell").filter(
            has=self.page.locator(".jupyter-widgets.widget-vbox, .jupyter-widgets.widget-box"))

    @staticmethod
    def outputs_of(cell) -> list[str]:
        """What a cell's outputs show: each image's data and each text, in order."""
        images = cell.locator(".jp-OutputArea-output img").evaluate_all(
            "els => els.map(e => e.getAttribute('src') || '')")
        texts = cell.locator(".jp-OutputArea-output pre").all_inner_texts()
        return images + texts
