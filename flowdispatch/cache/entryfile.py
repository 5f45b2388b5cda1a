"""One cache entry on disk: its format, its signature, and which folders to trust.

An entry is a header, a digest and the pickled value::

    flowdispatch-cache-2\\n
    <scheme> <key>\\n          scheme: "sha256", or "hmac-sha256" when signed
    sha256(header + data)     32 bytes: finds damage
    hmac(header + data)       32 bytes, only when signed: finds forgery
    data                      the value, pickled by cloudpickle

The key in the header is the entry's file name (its lineage key), so an
entry read under another name (a copy, a moved file, a symbolic link) is
refused. A checksum only finds damage: whoever can write the folder can
write a valid one. With a secret (``fd.config.set(cache_secret=...)``, or
``DASK_FLOWDISPATCH__CACHE_SECRET`` in the environment) entries are signed
with HMAC-SHA256, and an entry whose signature is missing or wrong is never
unpickled. Folders are trusted when they belong to the user (or to root)
and nobody else may write them.

Examples
--------
>>> blob = seal("3f2a", b"data", secret=None)
>>> blob[:len(MAGIC)] == MAGIC
True
>>> unseal("3f2a", blob, secret=None)
b'data'
>>> unseal("77aa", blob, secret=None)
Traceback (most recent call last):
...
flowdispatch.cache.entryfile.Untrusted: it holds the value of key '3f2a', not of '77aa' (a copied, ...)
>>> signed = seal("3f2a", b"data", secret=b"0123456789abcdef")
>>> unseal("3f2a", signed, secret=b"0123456789abcdef")
b'data'
>>> unseal("3f2a", blob, secret=b"0123456789abcdef")
Traceback (most recent call last):
...
flowdispatch.cache.entryfile.Unsigned: it is not signed, but a cache secret is set
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

from .. import config

__all__ = ["MAGIC", "MIN_SECRET", "OLD_MAGICS", "OldFormat", "Unsigned", "Untrusted",
           "entry_folder_problem", "folder_problem", "seal", "secret", "unseal"]

#: The first line of every entry this version writes.
MAGIC = b"flowdispatch-cache-2\n"
#: First lines of older formats: still counted by ``entries`` and ``clear``, never loaded.
OLD_MAGICS = (b"flowdispatch-cache-1\n",)
#: The shortest secret accepted, in bytes.
MIN_SECRET = 16
_PLAIN, _SIGNED = b"sha256", b"hmac-sha256"


class Untrusted(Exception):
    """An entry that must not be unpickled; the message says why."""


class Unsigned(Untrusted):
    """An entry without a signature, read while a secret is set."""


class OldFormat(Untrusted):
    """An entry written by an older flowdispatch."""


def secret() -> bytes | None:
    """The ``cache_secret`` setting as bytes, or ``None`` when there is none.

    Raises ``TypeError`` or ``ValueError`` for a setting that cannot be a secret.
    """
    chosen = config.get("cache_secret")
    if chosen is None or chosen == "" or chosen == b"":
        return None
    if isinstance(chosen, str):
        chosen = chosen.encode()
    if not isinstance(chosen, bytes):
        raise TypeError(
            f"cache_secret: expected a string, got {type(chosen).__name__}; dask reads "
            "DASK_FLOWDISPATCH__CACHE_SECRET as a Python literal, so quote a secret made of "
            "digits only, or make one with python -c 'import secrets; print(secrets.token_hex())'")
    if len(chosen) < MIN_SECRET:
        raise ValueError(
            f"cache_secret: expected at least {MIN_SECRET} bytes, got {len(chosen)}; a short "
            "secret can be guessed from any entry. Make one with "
            "python -c 'import secrets; print(secrets.token_hex())'")
    return chosen


def seal(key: str, data: bytes, secret: bytes | None) -> bytes:
    """The bytes of the entry of ``key`` holding ``data``, signed when there is a secret."""
    header = MAGIC + (_PLAIN if secret is None else _SIGNED) + b" " + key.encode() + b"\n"
    digest = hashlib.sha256(header + data).digest()
    if secret is not None:
        digest += hmac.digest(secret, header + data, "sha256")
    return header + digest + data


def unseal(key: str, blob: bytes, secret: bytes | None) -> bytes:
    """The data of an entry read under the name ``key``; raise :class:`Untrusted` if it
    is damaged, belongs to another key, or (with a secret) is unsigned or badly signed."""
    if blob.startswith(OLD_MAGICS):
        raise OldFormat("it was written by an older flowdispatch, whose entries are not "
                        "bound to their keys")
    end = blob.find(b"\n", len(MAGIC), len(MAGIC) + 300)
    if not blob.startswith(MAGIC) or end < 0:
        raise Untrusted("it is not a flowdispatch cache entry, or it is damaged")
    scheme, _, found = blob[len(MAGIC):end].partition(b" ")
    header = blob[:end + 1]
    size = 64 if scheme == _SIGNED else 32
    digest, data = blob[end + 1:end + 33], blob[end + 1 + size:]
    if scheme not in (_PLAIN, _SIGNED) or hashlib.sha256(header + data).digest() != digest:
        raise Untrusted("it is not a flowdispatch cache entry, or it is damaged "
                        "(checksum mismatch)")
    if found != key.encode():
        raise Untrusted(f"it holds the value of key {found.decode(errors='replace')!r}, not "
                        f"of {key!r} (a copied, moved or linked entry)")
    if secret is None:
        return data
    if scheme != _SIGNED:
        raise Unsigned("it is not signed, but a cache secret is set")
    expected = hmac.digest(secret, header + data, "sha256")
    if not hmac.compare_digest(blob[end + 33:end + 65], expected):
        raise Untrusted("its signature does not match the cache secret (it was signed with "
                        "another secret, or forged)")
    return data


def _owner_ok(uid: int) -> bool:
    return uid in (os.getuid(), 0)


def folder_problem(folder: str) -> str | None:
    """Why the cache folder ``folder`` cannot be trusted, or ``None`` if it can.

    It, and every folder above it (after following symbolic links), must
    belong to the user or to root. It must not be writable by every user; a
    folder above it may be, with the sticky bit (as the shared temporary
    folder). Where there are no user ids (Windows), every folder passes.
    """
    if not hasattr(os, "getuid"):
        return None
    real = os.path.realpath(folder)
    where = "" if real == os.path.abspath(folder) else f" (a symbolic link to {real!r})"
    path, level = real, 0
    while True:
        try:
            info = os.stat(path)
        except OSError as exc:
            return f"{path!r} cannot be read ({type(exc).__name__}: {exc})"
        what = f"it{where}" if level == 0 else f"it{where} lies in {path!r}, which"
        if not _owner_ok(info.st_uid):
            return f"{what} belongs to user id {info.st_uid}, not to you"
        if info.st_mode & stat.S_IWOTH and (level == 0 or not info.st_mode & stat.S_ISVTX):
            return (f"{what} can be written by every user "
                    f"(mode {oct(info.st_mode & 0o7777)})")
        if path == os.path.dirname(path):
            return None
        path, level = os.path.dirname(path), level + 1


def entry_folder_problem(path: str) -> tuple[str, str] | None:
    """``(folder, why)`` if the folders of the entry at ``path`` cannot be trusted: the
    cache folder (see :func:`folder_problem`), or its two-letter folder, which must be
    a plain folder of the user's that only the user may write."""
    if not hasattr(os, "getuid"):
        return None
    sub = os.path.dirname(path)
    root = os.path.dirname(sub)
    why = folder_problem(root)
    if why is not None:
        return root, why
    try:
        info = os.lstat(sub)
    except (FileNotFoundError, NotADirectoryError):  # no such folder: nothing in it to read
        return None
    if stat.S_ISLNK(info.st_mode):
        return sub, "it is a symbolic link; flowdispatch makes these folders itself"
    if not _owner_ok(info.st_uid):
        return sub, f"it belongs to user id {info.st_uid}, not to you"
    if info.st_mode & stat.S_IWOTH:
        return sub, f"it can be written by every user (mode {oct(info.st_mode & 0o7777)})"
    return None
