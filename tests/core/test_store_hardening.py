"""The multiprocess store under hostile and failing conditions (docs/security.md).

Planted symlinks and FIFOs, a lock held by someone else, a full disk: each scenario runs the
store in a fresh interpreter, as a worker would, and checks that nothing outside the directory
is touched, no process dies and nothing waits longer than its bound.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.test_multiprocess import run

# A child that counts, exits, and leaves a dead slot for the next scrape to fold.
DEAD_SLOT = """
c = Counter("hardening_total", "Counted by a child that exits.")
pid = os.fork()
if pid == 0:
    c.inc(5)
    os._exit(0)
os.waitpid(pid, 0)
"""


def modes(path: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in path.iterdir()}


def test_store_files_are_private_by_default(tmp_path: Path) -> None:
    """Slots, the archive and the lock file are created 0600 whatever the umask."""
    out = run(tmp_path, "os.umask(0o022)\n" + DEAD_SLOT + "generate_latest(); emit(value('hardening_total'))")
    assert out == 5.0
    found = modes(tmp_path)
    assert {"dir.lock", "archive.mrs"} <= set(found), found
    assert any(name.startswith("slot-") for name in found), found
    assert all(mode == 0o600 for mode in found.values()), {n: oct(m) for n, m in found.items()}


def test_group_access_when_configured(tmp_path: Path) -> None:
    """METRICS_STORE_FILE_MODE=0640 gives the group read access, and nothing to others."""
    os.environ["METRICS_STORE_FILE_MODE"] = "0640"
    try:
        run(tmp_path, DEAD_SLOT + "generate_latest(); emit(1)")
    finally:
        del os.environ["METRICS_STORE_FILE_MODE"]
    assert set(modes(tmp_path).values()) == {0o640}


def test_planted_symlinks_are_never_followed(tmp_path: Path) -> None:
    """Links under the lock's, the archive's and a temporary's names never write their targets."""
    store = tmp_path / "store"
    store.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = outside / "precious"
    precious.write_text("keep me")
    (store / "dir.lock").symlink_to(outside / "created-through-lock")
    # A scrape in the process below writes its archive through `archive.mrs.<pid>.tmp`.
    temporary = f"os.path.join({str(store)!r}, f'archive.mrs.{{os.getpid()}}.tmp')"
    plant = f"os.symlink({str(precious)!r}, {temporary})\n"
    out = run(
        store,
        plant + DEAD_SLOT + "generate_latest(); emit(value('hardening_total'))",
    )
    assert out == 5.0
    assert precious.read_text() == "keep me"
    assert not (outside / "created-through-lock").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]
    assert not (store / "dir.lock").is_symlink()


def test_planted_archive_link_fifo_and_foreign_slot_are_not_read(tmp_path: Path) -> None:
    """A symlinked archive and slot are not followed; a FIFO under a slot name never hangs a scrape."""
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    secret = outside / "secret.mrs"
    # A valid store file outside the directory, with a count that must not show up.
    run(outside, "Counter('hardening_total', 'x').inc(1000); generate_latest(); emit(1)")
    slot = next(outside.glob("slot-*.mrs"))
    os.link(slot, secret)
    (tmp_path / "archive.mrs").symlink_to(secret)
    (tmp_path / "slot-0900.mrs").symlink_to(secret)
    os.mkfifo(tmp_path / "slot-0901.mrs")
    out = run(
        tmp_path,
        DEAD_SLOT + "emit([value('hardening_total'), metrics._core.take_store_warnings()])",
        timeout=30,
    )
    assert out[0] == 5.0, out


def test_a_claim_never_waits_for_the_directory_lock(tmp_path: Path) -> None:
    """A new process's first write does not wait while someone holds `dir.lock`; a scrape waits 2 s."""
    lock = tmp_path / "dir.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        out = run(
            tmp_path,
            """
            t0 = time.monotonic()
            c = Counter("claimed_total", "Claimed under a held lock.")
            c.inc()
            claim = time.monotonic() - t0
            t0 = time.monotonic()
            text = generate_latest().decode()
            emit([claim, time.monotonic() - t0, value("claimed_total"), metrics._core.store_kind()])
            """,
            timeout=60,
        )
    finally:
        os.close(fd)
    claim, scrape, counted, kind = out
    assert kind == "shared"
    assert counted == 1.0
    assert claim < 1.0, f"the claim waited {claim:.1f} s for the directory lock"
    assert 1.5 < scrape < 5.0, scrape
    assert [p.name for p in tmp_path.glob("slot-*.mrs")], "the claim made no slot"


def test_lock_file_of_another_user_is_replaced(tmp_path: Path) -> None:
    """A `dir.lock` that another user planted (and could hold) is replaced by one of ours."""
    if os.geteuid() != 0:
        pytest.fail("this test gives a file away with chown: run the suite as root (CI does)")
    lock = tmp_path / "dir.lock"
    lock.write_text("")
    os.chown(lock, 65534, 65534)
    run(tmp_path, DEAD_SLOT + "generate_latest(); emit(1)")
    assert lock.stat().st_uid == os.geteuid()


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` at `path` (root only)."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk test mounts a tmpfs: run the suite as root (CI does)")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path, leave: int) -> None:
    """Fill the filesystem of `directory` until fewer than `leave` bytes are free."""
    chunk = b"\0" * 4096
    with open(directory / "filler", "wb") as f:
        while True:
            vfs = os.statvfs(directory)
            if vfs.f_bavail * vfs.f_frsize < leave:
                break
            try:
                f.write(chunk)
                f.flush()
            except OSError:
                break


def test_full_disk_degrades_without_killing_the_process(tmp_path: Path) -> None:
    """No space for a slot: the process lives, says why, and leaves no empty file behind.

    The series it could not place stay in its memory: counted, but not merged into scrapes.
    """
    with small_filesystem(tmp_path / "fs", "1m") as store:
        fill(store, 64 * 1024)
        out = run(
            store,
            """
            c = Counter("full_disk_total", "Counted with no space left.", ["n"])
            for i in range(2000):
                c.labels(str(i)).inc()
            warnings = metrics._core.take_store_warnings()
            emit(["served", warnings])
            """,
            timeout=60,
        )
        served, warnings = out
        assert served == "served"
        assert any("no space left" in w for w in warnings), warnings
        left = sorted(p.name for p in store.iterdir() if p.name != "filler")
        assert not [n for n in left if n.startswith((".claim-", "slot-"))], left


def test_disk_filling_up_while_a_slot_grows(tmp_path: Path) -> None:
    """A slot that cannot grow keeps its new series in memory; the old ones stay shared."""
    with small_filesystem(tmp_path / "fs", "2m") as store:
        out = run(
            store,
            f"""
            c = Counter("growing_total", "Series added while the disk fills.", ["n"])
            c.labels("first").inc()
            fd = os.open(os.path.join({str(store)!r}, "filler"), os.O_WRONLY | os.O_CREAT)
            try:
                while True:
                    os.write(fd, bytes(65536))
            except OSError:
                os.close(fd)
            for i in range(5000):  # about 90 bytes a series: beyond the first 256 KiB
                c.labels(f"{{i:040d}}").inc(2)
            warnings = metrics._core.take_store_warnings()[:1]
            emit([value("growing_total", n="first"), value("growing_total", n=f"{{4999:040d}}"), warnings])
            """,
            timeout=60,
        )
        first, last, warnings = out
        assert first == 1.0
        assert last is None, warnings  # in memory only (see the test above)
        assert warnings and "cannot grow the slot file" in warnings[0], warnings


def test_scrape_is_bounded_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    """Folding on demand (`mark_process_dead`) gives up after its bound and never raises."""
    run(tmp_path, DEAD_SLOT + "emit(1)")
    fd = os.open(tmp_path / "dir.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    started = time.monotonic()
    try:
        out = run(
            tmp_path,
            """
            core.mark_process_dead(12345)
            emit(value("django_metrics_store_problems_total"))
            """,
            timeout=60,
        )
    finally:
        os.close(fd)
    assert out >= 1.0
    assert time.monotonic() - started < 30
