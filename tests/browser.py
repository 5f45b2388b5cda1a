"""A real browser for the tests: headless Chromium driven by Selenium, and a JupyterLab server.

Both are context managers that stop everything they start. Chromium runs
headless with a fresh profile and without background networking (the
machine may have no network, and Chromium waits on refused connections).
JupyterLab runs this interpreter, on 127.0.0.1, on a free port, with a
random token, and with its own configuration, data and settings folders,
so nothing the user has installed or trusted changes what it shows; its
kernels are this interpreter too. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import _die_with_parent, wait_until

STARTUP_TIMEOUT = 90.0  # seconds: JupyterLab's first start builds nothing, but imports a lot
STOP_TIMEOUT = 15.0
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1300,1000")

# JupyterLab's settings for the test: every cell rendered (not only those in
# view), and no news or update checks.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


def missing() -> str:
    """Why the browser tests cannot run here, or "" when they can."""
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        return "Chromium and its driver are not installed (make test installs them)"
    return ""


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator:
    """A Selenium driver of headless Chromium, with a fresh profile in ``profile``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = Service(shutil.which("chromedriver"), log_output=str(profile.parent / "driver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(STARTUP_TIMEOUT)
        driver.set_script_timeout(STARTUP_TIMEOUT)
        yield driver
    finally:
        driver.quit()  # ends Chromium and its driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLab:
    """A JupyterLab server on ``root``; ``url(path)`` is a page of it, token included."""

    def __init__(self, root: Path, home: Path):
        self.root, self.home = root, home
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.process: subprocess.Popen | None = None

    def url(self, path: str, query: str = "") -> str:
        """The page at ``path``; ``query`` goes before the token (``reset``: a fresh layout)."""
        query = f"{query}&" if query else ""
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}?{query}token={self.token}"

    def __enter__(self) -> JupyterLab:
        kernel = self.home / "data" / "kernels" / "python3"
        kernel.mkdir(parents=True)
        (kernel / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python"}))
        for name, values in LAB_SETTINGS.items():
            path = self.home / "settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(self.home / "config"),
               "JUPYTER_DATA_DIR": str(self.home / "data"),
               "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
               "JUPYTER_PATH": str(self.home / "data"), "JUPYTER_PLATFORM_DIRS": "1"}
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
                   f"--port={self.port}", "--port-retries=0",
                   f"--IdentityProvider.token={self.token}",
                   f"--ServerApp.root_dir={self.root}",
                   f"--LabApp.user_settings_dir={self.home / 'settings'}",
                   f"--LabApp.workspaces_dir={self.home / 'workspaces'}",
                   "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # as in a container or CI
            command.append("--allow-root")
        self.log = open(self.home / "jupyterlab.log", "wb")  # noqa: SIM115 - closed in __exit__
        kwargs = {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        cwd=self.root, env=env, **kwargs)
        try:
            wait_until(self._up, STARTUP_TIMEOUT, "JupyterLab to answer", interval=0.2)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _up(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {self.process.returncode}:\n{self.logs()}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(self.url("api/status"), timeout=5) as answer:
                return answer.status == 200
        return False

    def logs(self) -> str:
        return (self.home / "jupyterlab.log").read_text(errors="replace")[-4000:]

    def __exit__(self, *exc: object) -> None:
        """Stop the server and its kernels: SIGTERM, then SIGKILL after a bounded wait."""
        import psutil

        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(self.process.pid)
            tree = [parent, *parent.children(recursive=True)]
            for proc in tree:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGTERM)
            _, alive = psutil.wait_procs(tree, timeout=STOP_TIMEOUT)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(alive, timeout=STOP_TIMEOUT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT)
        self.log.close()
