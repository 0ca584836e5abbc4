"""Pre-forking servers: which one runs this process, and where its workers share their store.

Without `PROMETHEUS_MULTIPROC_DIR`, a worker of gunicorn (any worker class), `uvicorn --workers N`
or uWSGI with a master switches to the shared store on its own (`METRICS_MULTIPROCESS = "auto"`),
in a directory private to that server instance. The rule (docs/multiprocess.md):

- A process belongs to a server instance when the server's own code is on its main thread's stack:
  gunicorn's `Arbiter` (every worker runs inside the arbiter's `spawn_worker`, and a `--preload`
  master loads the site inside `Arbiter.setup`), uvicorn's `subprocess_started` with a `Config`
  of more than one worker and no reload, or uWSGI's embedded `uwsgi` module with a master. The
  instance is named by its master's pid, the master's start time (field 22 of
  `/proc/<pid>/stat`, so a reused pid names another instance), the kernel's boot id and the pid
  namespace (two containers may both run their master as pid 1 and share `/dev/shm`).
- The directory `metrics-<euid>-<boot>-<pidns>-<master pid>-<start time>` lives in `/dev/shm`
  (memory-backed) when usable, else in the temporary directory. The first worker creates it with
  mode 0700; every sibling finds it by name and uses it only if `lstat` says it is a real
  directory (no symlink), owned by this user, mode 0700. The parent is world-writable only with
  the sticky bit, so nobody else can rename or replace a directory of ours once made.
- The worker that creates the directory removes the directories of this user's instances that
  no longer run (boot id changed, or the master's pid gone or started at another time), never
  following a symlink and never touching another pid namespace's, whose processes are invisible
  from here.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

logger = logging.getLogger("metrics")

PREFIX = "metrics-"
# Where a memory-backed filesystem is mounted on Linux: slot files there never touch a disk.
SHM = "/dev/shm"


@dataclass(frozen=True)
class Server:
    """A pre-forking server instance: its name, its master's pid, and its workers' user and group.

    `uid`/`gid` differ from this process's only in a root master whose workers run as another
    user (gunicorn `--user`): the directory it makes is theirs.
    """

    name: str
    master: int
    uid: int = -1
    gid: int = -1

    @property
    def owner(self) -> int:
        """Return the user the directory belongs to."""
        return os.geteuid() if self.uid < 0 else self.uid


def detect() -> Server | None:
    """Return the pre-forking server instance this process belongs to, or None.

    Costs a few dictionary look-ups in a process that no such server runs.
    """
    return _gunicorn() or _uvicorn() or _uwsgi()


def _main_thread_frames() -> Iterator[FrameType]:
    """Yield the frames of the main thread's stack, innermost first."""
    if threading.current_thread() is threading.main_thread():
        frame: FrameType | None = sys._getframe()
    else:
        frame = sys._current_frames().get(threading.main_thread().ident or 0)
    while frame is not None:
        yield frame
        frame = frame.f_back


def _gunicorn() -> Server | None:
    module = sys.modules.get("gunicorn.arbiter")
    arbiter_class = getattr(module, "Arbiter", None)
    if arbiter_class is None:
        return None
    filename = getattr(module, "__file__", None)
    for frame in _main_thread_frames():
        if frame.f_code.co_filename != filename:
            continue
        arbiter = frame.f_locals.get("self")
        if isinstance(arbiter, arbiter_class):
            # `pid` is set when the arbiter starts; a --preload master loads the site before.
            master = getattr(arbiter, "pid", None) or os.getpid()
            cfg = getattr(arbiter, "cfg", None)
            uid, gid = getattr(cfg, "uid", -1), getattr(cfg, "gid", -1)
            if not (isinstance(uid, int) and isinstance(gid, int)) or os.geteuid() != 0:
                uid = gid = -1
            return Server("gunicorn", master, uid, gid)
    return None


def _uvicorn() -> Server | None:
    module = sys.modules.get("uvicorn._subprocess")
    started = getattr(module, "subprocess_started", None)
    if started is None:
        return None
    for frame in _main_thread_frames():
        if frame.f_code is started.__code__:
            config = frame.f_locals.get("config")
            # --reload also runs the site in a spawned child: a development server, one process.
            if getattr(config, "workers", 1) > 1 and not getattr(config, "should_reload", False):
                import multiprocessing

                parent = multiprocessing.parent_process()
                return Server("uvicorn", parent.pid if parent and parent.pid else os.getppid())
    return None


def _uwsgi() -> Server | None:
    if "uwsgi" not in sys.modules and not os.path.basename(sys.executable or "").startswith("uwsgi"):
        return None
    try:
        import uwsgi  # only inside uWSGI
    except ImportError:
        return None
    uwsgi_module: Any = uwsgi
    master = int(uwsgi_module.masterpid())
    if master:
        return Server("uWSGI", master)
    if int(uwsgi_module.numproc) > 1:
        # Without a master nobody outlives the workers to name the instance: stay per-process.
        logger.warning(
            "metrics: uWSGI runs %s workers without a master; each keeps its own counts. Enable "
            "`master` or set PROMETHEUS_MULTIPROC_DIR (docs/multiprocess.md)",
            uwsgi_module.numproc,
        )
    return None


def start_time(pid: int) -> str:
    """Return the start time of process `pid` in clock ticks since boot (raise OSError if gone)."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        data = file.read()
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[19].decode()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip().replace("-", "")[:12]
    except OSError:
        return "0"


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def base_dir() -> str:
    """Return where instance directories live: /dev/shm if usable, else the temporary directory."""
    for candidate in (SHM, tempfile.gettempdir()):
        try:
            info = os.stat(candidate)
        except OSError:
            continue
        # World-writable without the sticky bit: anyone could rename our directory away.
        shared_unsafely = info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX
        if stat.S_ISDIR(info.st_mode) and not shared_unsafely and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    raise OSError(f"neither {SHM} nor {tempfile.gettempdir()} is a usable directory")


def instance_name(server: Server) -> str:
    """Return the directory name of `server`'s instance (raise OSError without /proc)."""
    return "-".join(
        (
            PREFIX + str(server.owner),
            _boot_id(),
            _pid_namespace(),
            str(server.master),
            start_time(server.master),
        )
    )


def instance_dir(server: Server, base: str | None = None) -> str:
    """Return the private store directory of `server`'s instance, creating it if this is the first.

    Raise OSError when it cannot be used safely: a symlink, another owner, other permission bits.
    """
    base = base or base_dir()
    path = os.path.join(base, instance_name(server))
    try:
        os.mkdir(path, 0o700)
        created = True
    except FileExistsError:
        created = False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if created:
            # mkdir's mode went through the umask.
            os.fchmod(fd, 0o700)
            if server.owner != os.geteuid():
                os.fchown(fd, server.owner, server.gid)
        info = os.fstat(fd)
        if info.st_uid != server.owner:
            raise PermissionError(f"{path} belongs to uid {info.st_uid}, not to uid {server.owner}")
        elif stat.S_IMODE(info.st_mode) != 0o700:
            raise PermissionError(f"{path} has mode {stat.S_IMODE(info.st_mode):04o}, not 0700")
    finally:
        os.close(fd)
    if created:
        remove_stale(base, server.owner)
    return path


def _running(pid: str, started: str) -> bool:
    try:
        return start_time(int(pid)) == started
    except (OSError, ValueError, IndexError):
        return False


def remove_stale(base: str, owner: int | None = None) -> list[str]:
    """Remove `owner`'s instance directories in `base` whose server no longer runs; return them.

    `owner` defaults to this process's user.
    """
    owner = os.geteuid() if owner is None else owner
    mine = f"{PREFIX}{owner}-"
    boot, namespace = _boot_id(), _pid_namespace()
    removed = []
    with os.scandir(base) as entries:
        names = [entry.name for entry in entries if entry.name.startswith(mine)]
    for name in names:
        parts = name[len(mine) :].split("-")
        if len(parts) != 4:
            continue
        their_boot, their_namespace, pid, started = parts
        if their_boot == boot and (their_namespace != namespace or _running(pid, started)):
            continue
        path = os.path.join(base, name)
        try:
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner:
                continue
            # On Linux rmtree works from directory descriptors and never follows a symlink.
            shutil.rmtree(path)
        except OSError as exc:
            logger.warning("metrics: could not remove the store of a stopped server, %s: %s", path, exc)
            continue
        removed.append(path)
    return removed


# Whether the store has been chosen; False until Django settings could be read.
_decided = False
_warned = threading.Lock()


def _mode_now() -> str | None:
    """Return METRICS_MULTIPROCESS, or None while the settings module is being imported.

    Loading the settings from the middle of their own import (a settings file that imports
    `metrics`) would configure Django with half of them; `AppConfig.ready()` asks again.
    """
    from django.conf import settings

    from metrics.conf import app_settings

    module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not settings.configured and module and module in sys.modules:
        return None
    try:
        return app_settings.MULTIPROCESS
    except Exception:
        # Settings that cannot be loaded yet (ImproperlyConfigured...): ready() asks again.
        return None


class Store(Protocol):
    """What this module needs of `metrics.core`, handed in so that it never imports it."""

    def multiprocess_dir(self) -> str | None: ...
    def enable_multiprocess(self, path: str) -> None: ...


# The store `choose_store` was given (metrics.core), for a forked child's second decision.
_store: Store | None = None


def choose_store(store: Store) -> None:
    """Move `store` to a private shared directory if this process is a pre-forking server's.

    Called by `metrics.core` when it is imported and again from `AppConfig.ready()`; decides
    once. An explicit `PROMETHEUS_MULTIPROC_DIR` always wins; `METRICS_MULTIPROCESS = "off"` (or
    "on", which requires the explicit directory) never switches. Settings are read only in a
    process that such a server runs.
    """
    global _decided, _store
    _store = core = store
    if _decided:
        return
    from metrics.conf import app_settings

    server = None if core.multiprocess_dir() is not None else detect()
    if server is None:
        _decided = True
        return
    mode = _mode_now()
    if mode is None:
        return
    _decided = True
    if app_settings.MULTIPROC_DIR or mode == "on":
        return
    if mode == "off":
        _warn_at_first_request(server)
        return
    try:
        path = instance_dir(server)
    except (OSError, ValueError, IndexError) as exc:
        logger.warning(
            "metrics: %s worker, but no private store directory (%s): each worker keeps its own "
            "counts. Set PROMETHEUS_MULTIPROC_DIR (docs/multiprocess.md)",
            server.name,
            exc,
        )
        return
    if "prometheus_client.values" in sys.modules:
        # prometheus_client picks its value class once, at import: its metrics stay per-process.
        from prometheus_client import values

        if not getattr(values.ValueClass, "_multiprocess", False):
            logger.warning(
                "metrics: prometheus_client was imported before `metrics`, so its metrics stay "
                "per-process in this %s worker; list 'metrics' first in INSTALLED_APPS or set "
                "PROMETHEUS_MULTIPROC_DIR (docs/multiprocess.md)",
                server.name,
            )
    # prometheus_client (imported from now on), the health check and any child process see it.
    try:
        core.enable_multiprocess(path)
    except OSError as exc:
        # A store that cannot be used must never keep a worker from starting.
        logger.warning(
            "metrics: %s worker, but its store is unusable (%s): each worker keeps its own counts",
            server.name,
            exc,
        )
        return
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    app_settings.clear_cache()


def _warn_at_first_request(server: Server) -> None:
    """Log once, at this process's first request, that scrapes see one worker."""
    from django.core.signals import request_started

    def warn(**kwargs: object) -> None:
        if not _warned.acquire(blocking=False):
            return
        request_started.disconnect(dispatch_uid=__name__)
        logger.warning(
            "metrics: METRICS_MULTIPROCESS is off in worker %s of a %s server (master %s): each "
            "scrape sees only the worker that answers it, and a worker's counts end with it",
            os.getpid(),
            server.name,
            server.master,
        )

    request_started.connect(warn, dispatch_uid=__name__, weak=False)


def _forget_decision_in_child() -> None:
    """Let a forked child decide again: a master that imported `metrics` early is no worker."""
    global _decided
    if _store is not None and _store.multiprocess_dir() is None:
        _decided = False


os.register_at_fork(after_in_child=_forget_decision_in_child)
