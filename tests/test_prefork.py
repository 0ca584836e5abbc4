"""The private store directory of a pre-forking server instance, and the METRICS_MULTIPROCESS setting."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.signals import request_started
from django.test import override_settings

from metrics import prefork
from metrics.checks import check_settings
from metrics.conf import SettingError, app_settings, parse_multiprocess


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for the test, restoring it after."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


def test_no_server_under_pytest() -> None:
    """A process that no pre-forking server started is left in-process."""
    assert prefork.detect() is None
    from metrics import core

    assert core.multiprocess_dir() is None or core.multiprocess_dir() == os.environ.get(
        "PROMETHEUS_MULTIPROC_DIR"
    )


def test_the_directory_is_made_0700_whatever_the_umask(tmp_path: Path, umask: Callable[[int], None]) -> None:
    """The first worker creates it 0700 even under a umask that would take bits away."""
    umask(0o277)
    server = prefork.Server("test", os.getpid())
    path = prefork.instance_dir(server, base=str(tmp_path))
    info = os.lstat(path)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid()
    # Every sibling finds the same one.
    assert prefork.instance_dir(server, base=str(tmp_path)) == path
    name = os.path.basename(path)
    assert name.startswith(f"metrics-{os.geteuid()}-") and name.endswith(
        f"-{os.getpid()}-{prefork.start_time(os.getpid())}"
    )


def test_a_symlink_in_its_place_is_refused(tmp_path: Path) -> None:
    """A symlink planted under the instance's name is never followed."""
    server = prefork.Server("test", os.getpid())
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / prefork.instance_name(server)).symlink_to(target)
    with pytest.raises(OSError):
        prefork.instance_dir(server, base=str(tmp_path))
    assert list(target.iterdir()) == []


def test_a_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    """A directory of the right name but another mode is not used."""
    server = prefork.Server("test", os.getpid())
    path = tmp_path / prefork.instance_name(server)
    path.mkdir()
    path.chmod(0o755)
    with pytest.raises(PermissionError, match="0755"):
        prefork.instance_dir(server, base=str(tmp_path))


def test_stale_directories_are_removed_live_and_foreign_ones_kept(tmp_path: Path) -> None:
    """Only this user's directories of servers that no longer run go; nothing is followed."""
    live = Path(prefork.instance_dir(prefork.Server("test", os.getpid()), base=str(tmp_path)))
    mine = f"metrics-{os.geteuid()}-"
    boot = live.name[len(mine) :].split("-")[0]
    namespace = live.name[len(mine) :].split("-")[1]
    dead = tmp_path / f"{mine}{boot}-{namespace}-{_dead_pid()}-12345"
    reused = tmp_path / f"{mine}{boot}-{namespace}-{os.getpid()}-1"
    other_boot = tmp_path / f"{mine}000000000000-{namespace}-{os.getpid()}-{prefork.start_time(os.getpid())}"
    other_namespace = tmp_path / f"{mine}{boot}-1-{_dead_pid()}-12345"
    other_user = tmp_path / f"metrics-{os.geteuid() + 1}-{boot}-{namespace}-{_dead_pid()}-12345"
    for path in (dead, reused, other_boot, other_namespace, other_user):
        path.mkdir(mode=0o700)
        (path / "slot-0000.mrs").write_bytes(b"x")
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")
    symlink = tmp_path / f"{mine}{boot}-{namespace}-{_dead_pid()}-7"
    symlink.symlink_to(target)

    removed = prefork.remove_stale(str(tmp_path))

    assert sorted(removed) == sorted(str(p) for p in (dead, reused, other_boot))
    assert live.is_dir() and other_namespace.is_dir() and other_user.is_dir()
    assert symlink.is_symlink() and (target / "keep").exists()


def test_start_time_names_the_process_incarnation() -> None:
    """A pid's start time is read from /proc; a process that is gone raises OSError."""
    assert prefork.start_time(os.getpid()).isdigit()
    with pytest.raises(OSError):
        prefork.start_time(_dead_pid())


@pytest.mark.parametrize(
    ("value", "mode"), [("auto", "auto"), (" ON ", "on"), ("off", "off"), (False, "off")]
)
def test_multiprocess_values(value: object, mode: str) -> None:
    """auto, on and off in any case; a boolean means on or off."""
    assert parse_multiprocess(value) == mode


def test_multiprocess_default_is_auto() -> None:
    """Without the setting, detection decides."""
    assert app_settings.MULTIPROCESS == "auto"


def test_a_bad_multiprocess_value_is_an_error() -> None:
    """An unknown mode is metrics.E025, naming the value."""
    with pytest.raises(SettingError):
        parse_multiprocess("sometimes")
    with override_settings(METRICS_MULTIPROCESS="sometimes"):
        errors = check_settings()
    assert [(e.id, "'sometimes'" in e.msg) for e in errors] == [("metrics.E025", True)]


def test_on_requires_the_directory(tmp_path: Path, env: Callable[..., None]) -> None:
    """`on` without PROMETHEUS_MULTIPROC_DIR is metrics.E025; with it, no error."""
    env(PROMETHEUS_MULTIPROC_DIR=None)
    with override_settings(METRICS_MULTIPROCESS="on", PROMETHEUS_MULTIPROC_DIR=None):
        errors = check_settings()
    assert [e.id for e in errors] == ["metrics.E025"]
    assert "requires PROMETHEUS_MULTIPROC_DIR" in errors[0].msg
    tmp_path.chmod(0o700)
    with override_settings(METRICS_MULTIPROCESS="on", PROMETHEUS_MULTIPROC_DIR=str(tmp_path)):
        assert check_settings() == []


@pytest.mark.django_db  # request_started also closes old database connections.
def test_off_warns_at_the_first_request_only(caplog: pytest.LogCaptureFixture) -> None:
    """The warning that scrapes see one worker is logged once, then the receiver is gone."""
    receivers = len(request_started.receivers)
    prefork._warn_at_first_request(prefork.Server("gunicorn", 1))
    assert len(request_started.receivers) == receivers + 1
    with caplog.at_level(logging.WARNING, logger="metrics"):
        request_started.send(sender=None)
        request_started.send(sender=None)
    assert [r.getMessage().count("METRICS_MULTIPROCESS is off") for r in caplog.records] == [1]
    assert len(request_started.receivers) == receivers


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a directory away")
def test_a_root_master_makes_the_directory_its_workers_user_owns(tmp_path: Path) -> None:
    """gunicorn --user: the root master's directory is the workers' own, named for their uid."""
    server = prefork.Server("gunicorn", os.getpid(), uid=65534, gid=65534)
    path = prefork.instance_dir(server, base=str(tmp_path))
    info = os.lstat(path)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o700)
    assert os.path.basename(path).startswith("metrics-65534-")
    assert prefork.instance_dir(server, base=str(tmp_path)) == path
