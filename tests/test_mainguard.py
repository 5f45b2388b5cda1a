"""The main guard: a script that starts a run outside ``if __name__ == "__main__":``."""

import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import flowdispatch as fd
from flowdispatch.errors import ExecutorError
from flowdispatch.mainguard import _is_main_test, check_main_guard

ROOT = Path(__file__).resolve().parent.parent

HEAD = """\
import flowdispatch as fd

@fd.op
def inc(x):
    return x + 1
"""


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(HEAD + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)


@pytest.mark.parametrize("executor, shown", [("processes", "ProcessExecutor"),
                                              ("dask", "DaskExecutor")])
def test_an_unguarded_run_gives_one_short_error(tmp_path, executor, shown):
    done = run_script(tmp_path, f'print(fd.compute(inc(1), executor="{executor}"))\n')
    assert done.returncode == 1 and done.stdout == ""
    last = done.stderr.strip().splitlines()
    assert last[-5].startswith(
        f"flowdispatch.errors.ExecutorError: line 6 of the main script starts a run on {shown}")
    assert last[-5].endswith('and it is not under `if __name__ == "__main__":`.')
    assert last[-2:] == ['    if __name__ == "__main__":', "        fd.compute(...)"]
    assert done.stderr.count("Traceback") == 1
    assert len(done.stderr.splitlines()) < 25


def test_a_run_called_from_an_unguarded_main_function_is_found(tmp_path):
    done = run_script(tmp_path, """\
        def main():
            return fd.compute(inc(1), executor="processes")

        main()
        """)
    assert "line 9 of the main script starts a run" in done.stderr


def test_a_guarded_script_runs(tmp_path):
    done = run_script(tmp_path, """\
        def main():
            return fd.compute(inc(1), executor="processes")

        if __name__ == "__main__":
            print(main())
        """)
    assert (done.returncode, done.stdout, done.stderr) == (0, "(2,)\n", "")


def test_an_unguarded_run_that_starts_no_processes_is_fine(tmp_path):
    done = run_script(tmp_path, """\
        print(fd.compute(inc(1), executor="threads"))
        print(fd.compute(inc(2), executor=fd.ProcessExecutor(mp_context="fork")))
        """)
    assert (done.returncode, done.stdout) == (0, "(2,)\n(3,)\n")


def test_a_run_while_a_child_imports_the_main_script_is_refused():
    process = multiprocessing.current_process()
    process._inheriting = True  # what multiprocessing sets while a child imports __main__
    try:
        with pytest.raises(ExecutorError, match=r"^a run on ProcessExecutor\(max_workers=1\) "
                                                r"was started while a worker process was "
                                                r"importing the main script"):
            check_main_guard(fd.ProcessExecutor(max_workers=1))
        check_main_guard(fd.ThreadExecutor())
    finally:
        del process._inheriting


@pytest.mark.parametrize("test, guard", [
    ('__name__ == "__main__"', True),
    ("'__main__' == __name__", True),
    ('__name__ == "__main__" and True', True),
    ('__name__ != "x"', False),
    ("name == '__main__'", False),
])
def test_what_counts_as_the_guard(test, guard):
    import ast

    assert _is_main_test(ast.parse(test, mode="eval").body) is guard
