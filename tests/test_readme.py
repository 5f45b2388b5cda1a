"""The README's tour of the API runs as written and its comments tell the truth."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import flowdispatch as fd

README = Path(__file__).resolve().parents[1] / "README.md"


def tour() -> str:
    text = README.read_text()
    section = text[text.index("## A tour of the API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_tour_runs_and_its_comments_hold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "readme_tour"}
    exec(compile(tour(), str(README), "exec"), ns)
    total, even, raw, res = ns["total"], ns["even"], ns["raw"], ns["res"]
    assert total.compute(executor="sync") == 45
    assert fd.compute(even, total, executor="processes") == ([0, 2, 4, 6, 8], 45)
    assert (res[total], res.state(total), res.ok) == (45, "done", True)
    assert fd.compute(total, executor="sync", overrides={raw: [1, 2, 3]}) == (6,)
    assert ns["fetch"].settings.retries == 3
    for name in ("total.svg", "run.svg"):
        assert "<svg" in (tmp_path / name).read_text()


def test_the_script_example_runs_with_its_guard(tmp_path):
    text = README.read_text()
    code = re.search(r"```python\n(# pipeline.py.*?)```", text, re.S).group(1)
    script = tmp_path / "pipeline.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(README.parent)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "(285,)\n", "")


def test_no_machine_paths_in_the_readme():
    assert not re.search(r"/(work|root|home|tmp)/", README.read_text())


def test_the_backend_example_runs_and_keeps_the_contract():
    from flowdispatch.testing import check_executor

    text = README.read_text()
    section = text[text.index("## Your own backend"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "(3,)"
    ns: dict = {}
    exec(compile(code.replace("print(", "(", 1), str(README), "exec"), ns)
    check_executor(ns["InlineExecutor"])
