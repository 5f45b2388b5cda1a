"""Cache folders named by fsspec URLs: a store that the workers of a cluster share.

``cache_dir`` may be a local path or any URL that fsspec opens (``s3://bucket/prefix``,
``gs://...``, ``memory://...``); ``file://`` URLs name local paths and are used as
local paths. A local folder is read and written with plain ``os`` calls; a URL
goes through fsspec, with the store's credentials and options from wherever
fsspec and the store's library look for them (environment variables such as
``AWS_ACCESS_KEY_ID`` and ``FSSPEC_S3_ENDPOINT_URL``, or fsspec's configuration
files), in each process that reads or writes the cache, dask workers included.

An entry is written whole or not at all: an object store takes it in a single
PUT (an object appears only once all of it has arrived); other file systems
get a temporary name that is then moved into place. A torn or partial entry
is refused anyway by its checksum.

Whoever can write the store can run code in every process that reads it, and
an object store has no owner to check: a remote store is used only with
signed entries (a ``cache_secret``). ``memory://`` is exempt: it lives in the
process itself, so only code already running there can write it.

Examples
--------
>>> is_url("s3://bucket/cache"), is_url("/home/me/.cache/flowdispatch")
(True, False)
>>> normalize("memory://cache/"), normalize("file:///data/cache")
('memory://cache', '/data/cache')
>>> needs_signing("s3://bucket/cache"), needs_signing("memory://cache")
(True, False)
>>> write("memory://doc-cache/ab/abc", b"entry")
>>> read("memory://doc-cache/ab/abc"), read("memory://doc-cache/ab/missing")
(b'entry', None)
>>> remove(["memory://doc-cache/ab/abc"])
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["ATOMIC_PUT", "UNSIGNED_OK", "is_url", "listing", "needs_signing", "normalize",
           "protocol", "read", "read_many", "remove", "write"]

#: Stores where one PUT of a whole object is atomic: written straight to the entry's name.
ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss",
                        "memory"})
#: Stores whose entries need not be signed: they live in the process that reads them.
UNSIGNED_OK = frozenset({"memory"})
_LOCAL = ("file", "local")


def is_url(path: str) -> bool:
    """Whether ``path`` names a cache through fsspec rather than a local path."""
    return "://" in path


def protocol(url: str) -> str:
    """The store of ``url``: its protocol, the last one of a chained URL."""
    return url.rsplit("::", 1)[-1].split("://", 1)[0].lower()


def normalize(url: str) -> str:
    """``url`` as the cache uses it: a ``file://`` URL as an absolute local path, any
    other URL without a trailing slash, a local path made absolute."""
    if not is_url(url):
        return os.path.abspath(url)
    if protocol(url) in _LOCAL and "::" not in url:
        from fsspec.implementations.local import LocalFileSystem

        return os.path.abspath(str(LocalFileSystem._strip_protocol(url)))
    return url.rstrip("/")


def needs_signing(url: str) -> bool:
    """Whether a cache at ``url`` must sign its entries (every store but ``memory://``)."""
    return protocol(url) not in UNSIGNED_OK


def _fs(url: str) -> tuple[AbstractFileSystem, str]:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(url)
    return fs, str(path)


def write(url: str, blob: bytes) -> None:
    """Store ``blob`` at ``url`` whole: one PUT on an object store, else a temporary
    name moved into place."""
    fs, path = _fs(url)
    if protocol(url) in ATOMIC_PUT:
        fs.pipe_file(path, blob)
        return
    folder = posixpath.dirname(path)
    fs.makedirs(folder, exist_ok=True)
    tmp = posixpath.join(folder, f".tmp-{uuid.uuid4().hex}")
    fs.pipe_file(tmp, blob)
    try:
        fs.mv(tmp, path)
    except BaseException:
        try:
            fs.rm(tmp)
        except Exception:  # noqa: S110 - the move's error is the one to report
            pass
        raise


def read(url: str) -> bytes | None:
    """The bytes at ``url``, or ``None`` if there is nothing there.

    One request for the whole object (``start=0``: a ranged GET, which stores
    such as s3fs do not split into concurrent parts that could mix versions).
    """
    fs, path = _fs(url)
    try:
        return bytes(fs.cat_file(path, start=0))
    except FileNotFoundError:
        return None


def read_many(urls: list[str]) -> list[bytes | None | Exception]:
    """:func:`read` of each of ``urls`` (of one store), concurrently where the store's
    library can: the bytes, ``None`` for nothing there, or the error."""
    if not urls:
        return []
    fs, _ = _fs(urls[0])
    paths = [_fs(url)[1] for url in urls]
    found = fs.cat_ranges(paths, [0] * len(paths), [None] * len(paths), on_error="return")
    return [None if isinstance(blob, FileNotFoundError)
            else bytes(blob) if isinstance(blob, (bytes, bytearray)) else blob
            for blob in found]


def _relative(root: str, path: str) -> str | None:
    """``path`` below ``root`` as ``"ab/key"``, when it has an entry's shape."""
    if not path.startswith(root.rstrip("/") + "/"):
        return None
    rel = path[len(root.rstrip("/")) + 1:]
    sub, _, name = rel.partition("/")
    return rel if len(sub) == 2 and name and "/" not in name else None


def listing(url: str, magics: tuple[bytes, ...]) -> dict[str, int]:
    """The entries below the cache ``url`` (each as a URL, by the spelling of ``url``)
    with their sizes: the objects in its two-letter folders whose first bytes are
    one of ``magics``."""
    fs, root = _fs(url)
    fs.invalidate_cache()  # other processes write the store: list it afresh
    try:
        found: dict[str, Any] = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    shaped = {path: rel for path in sorted(found) if (rel := _relative(root, path)) is not None}
    width = max((len(m) for m in magics), default=0)
    paths = list(shaped)
    heads = fs.cat_ranges(paths, [0] * len(paths), [width] * len(paths), on_error="return")
    return {f"{url}/{shaped[path]}": int(found[path].get("size") or 0)
            for path, head in zip(paths, heads)
            if isinstance(head, bytes) and head.startswith(magics)}


def remove(urls: Iterable[str]) -> None:
    """Remove the objects at ``urls`` (of one store)."""
    urls = list(urls)
    if not urls:
        return
    fs, _ = _fs(urls[0])
    fs.rm([_fs(url)[1] for url in urls])
