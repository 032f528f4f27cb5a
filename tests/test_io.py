"""Atomic writes (``qsnn.io``): complete or absent, and the mode a plain ``open`` would give.

The expected modes are the POSIX rule for a new file, ``0o666 & ~umask``, and the mode the OS
itself gives a file created by ``open(path, "w")`` under the same umask. The umask is changed
only inside a subprocess (it is process-wide).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from qsnn.io import _current_umask, write_atomic, write_json_atomic, write_text_atomic

posix_only = pytest.mark.skipif(not hasattr(os, "fchmod"), reason="file modes are POSIX")

_CHILD = r"""
import json, os, stat, sys
from pathlib import Path
import qsnn.io as qio

out = Path(sys.argv[1])
result = {}
for mask in (0o022, 0o077, 0o027):
    os.umask(mask)
    d = out / f"m{mask:03o}"
    plain = d / "plain.txt"
    d.mkdir()
    with open(plain, "w") as f:  # what the OS gives a normal new file
        f.write("x")
    old = d / "old.json"
    old.write_text("{}")
    os.chmod(old, 0o600)  # a previous file's mode is not kept: a new file replaces it
    paths = {
        "json": qio.write_json_atomic(d / "r.json", {"a": 1}),
        "text": qio.write_text_atomic(d / "r.md", "# r\n"),
        "bytes": qio.write_atomic(d / "r.bin", lambda h: h.write(b"\x00\x01")),
        "replaced": qio.write_json_atomic(old, {"b": 2}),
    }
    modes = {k: stat.S_IMODE(os.stat(p).st_mode) for k, p in paths.items()}
    modes["plain"] = stat.S_IMODE(os.stat(plain).st_mode)
    qio._PROC_STATUS = str(out / "no-such-status")  # force the os.umask fallback
    modes["fallback_read"] = qio._current_umask()
    modes["after_fallback"] = os.umask(mask)  # the fallback restored the mask
    qio._PROC_STATUS = "/proc/self/status"
    modes["proc_read"] = qio._current_umask()
    result[f"{mask:03o}"] = modes
print(json.dumps(result))
"""


@posix_only
def test_written_files_honour_the_umask(tmp_path):
    """umask 022 -> 0o644, 077 -> 0o600, 027 -> 0o640, for every writer and for a replaced
    0o600 file, equal to a file made by ``open``; the umask is read right both ways."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {"022": 0o644, "077": 0o600, "027": 0o640}
    for mask, want in expected.items():
        modes = result[mask]
        assert want == 0o666 & ~int(mask, 8)
        for kind in ("json", "text", "bytes", "replaced", "plain"):
            assert modes[kind] == want, (mask, kind, oct(modes[kind]))
        assert modes["fallback_read"] == int(mask, 8)
        assert modes["after_fallback"] == int(mask, 8)
        if os.path.exists("/proc/self/status"):
            assert modes["proc_read"] == int(mask, 8)
    assert json.loads((tmp_path / "m077" / "old.json").read_text()) == {"b": 2}
    # no temporary file is left beside the results
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_current_umask_does_not_change_it():
    """Read twice around a real ``os.umask`` round trip: the same value, and unchanged."""
    before = _current_umask()
    old = os.umask(before)
    assert old == before
    assert _current_umask() == before


@posix_only
def test_write_in_this_process_matches_its_umask(tmp_path):
    """Without touching the umask: the mode is ``0o666 & ~umask`` of this process."""
    path = write_text_atomic(tmp_path / "sub" / "a.txt", "hello")
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_current_umask()


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"v": 1})

    def boom(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, boom)
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
