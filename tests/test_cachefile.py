"""The format of a cache entry: what damage, forgery and misplacement it finds."""

from __future__ import annotations

import os

import pytest

import flowdispatch as fd
from flowdispatch.cache.entryfile import (MAGIC, Unsigned, Untrusted, entry_folder_problem,
                                    folder_problem, seal, secret, unseal)

KEY = "0f" + "1" * 30
SECRET = b"sixteen bytes ok"


@pytest.mark.parametrize("signing", [None, SECRET])
def test_an_entry_comes_back_only_under_its_own_key(signing):
    blob = seal(KEY, b"value", signing)
    assert blob.startswith(MAGIC) and unseal(KEY, blob, signing) == b"value"
    with pytest.raises(Untrusted, match=rf"holds the value of key '{KEY}', not of '0f2'"):
        unseal("0f2", blob, signing)


@pytest.mark.parametrize("signing", [None, SECRET])
@pytest.mark.parametrize("damage", [
    lambda blob: blob[:-1],  # torn
    lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]),  # one bit of the value
    lambda blob: blob.replace(b"sha256 ", b"sha512 ", 1),
    lambda blob: blob.replace(MAGIC, MAGIC[:-2] + b"9\n"),
    lambda blob: MAGIC + b"x" * 400,  # no end to the header
])
def test_damage_is_found(signing, damage):
    with pytest.raises(Untrusted, match="not a flowdispatch cache entry, or it is damaged"):
        unseal(KEY, damage(seal(KEY, b"value", signing)), signing)


def test_a_forged_entry_with_a_valid_checksum_is_found_only_with_a_secret():
    forged = seal("other", b"value", None).replace(b"other", KEY.encode())  # checksum now wrong
    with pytest.raises(Untrusted, match="checksum mismatch"):
        unseal(KEY, forged, None)
    planted = seal(KEY, b"planted", None)  # a valid checksum is easy to make
    assert unseal(KEY, planted, None) == b"planted"
    with pytest.raises(Unsigned, match="it is not signed, but a cache secret is set"):
        unseal(KEY, planted, SECRET)
    guessed = seal(KEY, b"planted", b"a guessed secret")
    with pytest.raises(Untrusted, match="its signature does not match the cache secret"):
        unseal(KEY, guessed, SECRET)


def test_the_secret_setting():
    assert secret() is None
    with fd.config.set(cache_secret="x" * 16):
        assert secret() == b"x" * 16
    with fd.config.set(cache_secret=b"\x00" * 20):
        assert secret() == b"\x00" * 20
    with fd.config.set(cache_secret=""):
        assert secret() is None


def test_folders(tmp_path):
    root = tmp_path / "cache"
    (root / "ab").mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    assert folder_problem(str(root)) is None
    assert entry_folder_problem(str(root / "ab" / "abcd")) is None
    assert entry_folder_problem(str(root / "cd" / "cdef")) is None  # not made yet
    (root / "ef").symlink_to(root / "ab")
    assert entry_folder_problem(str(root / "ef" / "ef01")) == (
        str(root / "ef"), "it is a symbolic link; flowdispatch makes these folders itself")
    sticky = tmp_path / "shared"
    sticky.mkdir()
    sticky.chmod(0o1777)  # shared and sticky: fine above the cache folder, not as it
    (sticky / "cache").mkdir(mode=0o700)
    assert folder_problem(str(sticky / "cache")) is None
    assert folder_problem(str(sticky)) == "it can be written by every user (mode 0o1777)"
    sticky.chmod(0o777)
    assert folder_problem(str(sticky / "cache")) == (
        f"it lies in {str(sticky)!r}, which can be written by every user (mode 0o777)")
    assert "cannot be read" in folder_problem(str(tmp_path / "missing"))
    os.chmod(sticky, 0o700)
