"""Types for users: mypy and pyright on typed programs, and the mypy plugin's errors;
and the types of the package itself (``mypy --strict``, ``pyright --verifytypes``).

The programs live in ``tests/typing/``. Each checker runs in a subprocess from
a temporary folder outside the repository, so that it finds ``flowdispatch``
the way it would for a user's script: installed in the virtualenv (which
``make`` installs with setuptools' ``editable_mode=compat``, visible to both).
Only ``mypy --strict -p flowdispatch`` runs in the repository, whose
``setup.cfg`` configures it.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).resolve().parent / "typing"
ROOT = PROGRAMS.parents[1]
USER_PROGRAM = PROGRAMS / "user_program.py"
PLUGIN_CALLS = PROGRAMS / "plugin_calls.py"
TYPING_PAGE = ROOT / "docs" / "typing.rst"
TIMEOUT = 240  # seconds per checker run; each takes a few
EXPECTED = re.compile(r"#\s*E:\s*(.+?)\s*$")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mypy caches of the module's runs, one per configuration (the first run fills it)."""
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(program: Path, folder: Path, cache: Path, plugin: bool) -> list[tuple[int, str]]:
    """``mypy --strict`` on the program: its (line, message) errors."""
    config = folder / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\n"
                      + ("plugins = flowdispatch.mypy\n" if plugin else ""))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
         str(cache / ("plugin" if plugin else "plain")), "--no-error-summary", "--show-error-codes", "--no-pretty",
         "--hide-error-context", "--no-color-output", str(program)],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=folder,
    )
    assert done.returncode in (0, 1), f"mypy failed:\n{done.stdout}\n{done.stderr}"
    found = []
    for line in done.stdout.splitlines():
        where, _, message = line.partition(": error: ")
        if message:
            assert where.startswith(str(program)), line  # nothing in flowdispatch itself
            found.append((int(where.rsplit(":", 1)[1]), message.strip()))
        else:
            assert ": note: " in line, line
    return found


def test_mypy_infers_the_user_program(tmp_path, cache):
    assert mypy(USER_PROGRAM, tmp_path, cache, plugin=False) == []


def test_mypy_with_the_plugin_infers_the_user_program(tmp_path, cache):
    assert mypy(USER_PROGRAM, tmp_path, cache, plugin=True) == []


def test_pyright_infers_the_user_program_in_strict_mode(tmp_path):
    env = {**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pyright", "--pythonpath", sys.executable, "--outputjson",
         str(USER_PROGRAM)],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path, env=env,
    )
    report = json.loads(done.stdout)
    problems = [f"{d['range']['start']['line'] + 1}: {d['message']}"
                for d in report["generalDiagnostics"] if d["severity"] != "information"]
    assert problems == []
    assert report["summary"]["filesAnalyzed"] == 1
    assert done.returncode == 0


def test_mypy_strict_finds_nothing_in_the_package(cache):
    # from the repository: its setup.cfg configures mypy (stubs, untyped libraries)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "setup.cfg"),
         "--cache-dir", str(cache / "package"), "--no-color-output", "-p", "flowdispatch"],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Success: no issues found"), done.stdout


def test_pyright_verifytypes_scores_at_least_95_percent(tmp_path):
    # --verifytypes finds the package with the `python` on PATH (it does not take
    # --pythonpath): the virtualenv's comes first. From outside the repository, it
    # resolves the installed (compat editable) package, as a user's pyright would.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pyright", "--verifytypes", "flowdispatch", "--ignoreexternal",
         "--outputjson"],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path, env=env,
    )
    report = json.loads(done.stdout)
    found = report["typeCompleteness"]
    assert [d["message"] for d in report["generalDiagnostics"]
            if d["severity"] == "error"] == []
    assert Path(found["packageRootDirectory"]) == ROOT / "flowdispatch"
    unknown = [s["name"] for s in found["symbols"] if s["isExported"] and not s["isTypeKnown"]]
    assert found["completenessScore"] >= 0.95, unknown
    assert found["exportedSymbolCounts"]["withKnownType"] > 400


def test_the_user_program_runs():
    namespace = runpy.run_path(str(USER_PROGRAM), run_name="__main__")
    assert namespace["res"].ok


def test_the_typing_page_example_runs_and_mypy_agrees(tmp_path, cache):
    page = TYPING_PAGE.read_text(encoding="utf-8")
    block = page.split(".. code-block:: python\n\n", 1)[1].split("\nBoth checkers", 1)[0]
    example = tmp_path / "typing_page.py"
    example.write_text("\n".join(line[3:] for line in block.splitlines()) + "\n")
    assert "assert_type(res[big], float)" in example.read_text()
    runpy.run_path(str(example))
    assert mypy(example, tmp_path, cache, plugin=False) == []


def test_the_plugin_flags_exactly_the_wrong_calls(tmp_path, cache):
    lines = PLUGIN_CALLS.read_text(encoding="utf-8").splitlines()
    expected = [(number, found.group(1)) for number, line in enumerate(lines, 1)
                if (found := EXPECTED.search(line))]
    assert len(expected) >= 10
    assert mypy(PLUGIN_CALLS, tmp_path, cache, plugin=True) == expected


def test_the_plugin_is_never_imported_by_a_program():
    code = ("import sys, flowdispatch as fd; fd.op(len)('ab'); "
            "print('flowdispatch.mypy' in sys.modules, 'mypy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.stdout.split() == ["False", "False"]


def test_the_plugin_entry_point_gives_the_plugin_class():
    from flowdispatch.mypy import FlowdispatchPlugin, plugin

    assert plugin("1.10") is FlowdispatchPlugin
