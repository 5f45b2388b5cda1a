"""The programs here are checked by tests/test_typing.py, not collected as tests."""

collect_ignore_glob = ["*.py"]
