# Type stubs for the part of cloudpickle that flowdispatch uses (cloudpickle ships
# no type information); found by mypy (mypy_path in setup.cfg) and pyright (typings/).
from pickle import loads as loads
from typing import Any

def dumps(obj: Any, protocol: int | None = None, buffer_callback: Any = None) -> bytes: ...
