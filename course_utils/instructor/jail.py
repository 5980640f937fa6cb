"""Where and how a submission's kernel runs: a throw-away folder holding copies of what it needs (the student
package, the data), resource limits, another user id when the grader runs as root, and ``--sandbox`` (bubblewrap)
when it is on the machine. Used by ``submission``; see docs/grading.md for what each protection stops."""
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from ..paths import course_root

MARKER_ENV = "COURSE_GRADER_RUN"
PACKAGE = Path(__file__).resolve().parent.parent
FIRST_UID = 61000  # as root, a kernel of job slot j runs as user uid_base() + j, from FIRST_UID up
UID_BLOCK = 64  # user ids per grader run: its job slots

# Run before the kernel's own command: limits, then (as root) the connection file handed over and a plain user id.
WRAPPER = """import json, os, resource, sys
limits = json.loads(sys.argv[1])
for name in ("AS", "FSIZE", "NPROC", "CORE"):
    value = limits[name.lower()]
    if value is not None:
        resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value))
if limits["uid"] is not None:
    os.chown(sys.argv[sys.argv.index("-f") + 1], limits["uid"], limits["uid"])
    os.setgroups([]); os.setgid(limits["uid"]); os.setuid(limits["uid"])
os.execv(sys.argv[2], sys.argv[2:])
"""


@dataclass
class Limits:
    """A kernel's resource limits, in bytes and processes; ``uid``: the user id it runs as (None: the grader's)."""
    address_space: int = 8 * 2**30
    file_size: int = 256 * 2**20
    processes: int = 512
    uid: int = None

    def wrapper(self) -> list:
        """The command that sets these limits and then runs the command that follows it."""
        settings = {"as": self.address_space, "fsize": self.file_size, "nproc": self.processes, "core": 0,
                    "uid": self.uid}
        return [sys.executable, "-c", WRAPPER, json.dumps(settings)]


@functools.lru_cache(maxsize=1)
def uid_base() -> int:
    """The first of this grader run's own block of ``UID_BLOCK`` user ids: picked from its process id and moved on
    past any block a running process uses, so that two graders on one machine (or one grader and a fork bomb's
    leftovers) never share a user id, and so never a process limit or a kill."""
    used = {p.info["uids"].real for p in psutil.process_iter(["uids"]) if p.info["uids"]}
    block = os.getpid() % 4096
    while any(FIRST_UID + block * UID_BLOCK + j in used for j in range(UID_BLOCK)):
        block = (block + 1) % 4096
    return FIRST_UID + block * UID_BLOCK


def limits_for(slot: int, **sizes) -> Limits:
    """The limits of a kernel in job slot ``slot``: as root, its own user id, so that the process limit counts
    its processes only and the instructor's files are read-only to it; else the process limit counts the user's
    processes and threads too, so it is raised by as many as run now."""
    if os.geteuid() == 0:
        return Limits(**sizes, uid=uid_base() + slot % UID_BLOCK)
    limits = Limits(**sizes)
    limits.processes += sum(p.info["num_threads"] or 0 for p in psutil.process_iter(["uids", "num_threads"])
                            if p.info["uids"] and p.info["uids"].real == os.getuid())
    return limits


def workspace(package: Path, uid=None) -> Path:
    """A fresh folder for one submission: ``pkg/course_utils`` (the student package), ``course/data`` (a copy of the
    data), ``course/notebooks`` (the kernel's working directory, empty) and ``home``; owned by ``uid`` if given,
    the package and data read-only. ``package``: the folder holding the student package's copy (``tamper``)."""
    root = Path(tempfile.mkdtemp(prefix="grader-"))
    shutil.copytree(package, root / "pkg")
    course = root / "course"
    shutil.copytree(course_root() / "data", course / "data", ignore=shutil.ignore_patterns("*.tar*", "*.zip"))
    (course / "notebooks").mkdir()
    _copy_fonts(root / "home")
    _copy_numba_cache(root / "home" / "numba")
    _read_only(root / "pkg")
    _read_only(course / "data")
    if uid is not None:
        for path in [root, *root.rglob("*")]:
            os.lchown(path, uid, uid)
    return root


def _copy_numba_cache(to: Path) -> None:
    """numba's compiled functions (UMAP's, pynndescent's), laid out for ``NUMBA_CACHE_DIR=to``: a kernel that may not
    write into the installation would otherwise compile them again (half a minute)."""
    for cached in Path(sysconfig.get_paths()["purelib"]).glob("*/__pycache__/*.nb[ic]"):
        source_dir = os.path.abspath(cached.parent.parent)  # numba's _UserProvidedCacheLocator's layout
        folder = to / f"{os.path.basename(source_dir)}_{hashlib.sha1(source_dir.encode()).hexdigest()}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cached, folder / cached.name)


def _copy_fonts(home: Path) -> None:
    """matplotlib's font list, so that a kernel with this home does not rebuild it (seconds)."""
    cache = Path.home() / ".cache" / "matplotlib"
    (home / ".cache").mkdir(parents=True)
    if cache.is_dir():
        shutil.copytree(cache, home / ".cache" / "matplotlib")


def _read_only(folder: Path) -> None:
    """Files 0444 and folders 0555 (stops a plain write; the owner may change it back, another user may not)."""
    for path in folder.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    folder.chmod(0o555)


def kernel_env(root: Path, run: str) -> dict:
    """The kernel's environment: the student package first on the path, the workspace as the course's root and home,
    and ``run`` marking every process it starts (see ``kill_marked``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "JUPYTER_"))}
    env.update(PYTHONPATH=str(root / "pkg"), COURSE_ROOT=str(root / "course"), HOME=str(root / "home"),
               MPLCONFIGDIR=str(root / "home" / ".cache" / "matplotlib"), PYTHONDONTWRITEBYTECODE="1",
               NUMBA_CACHE_DIR=str(root / "home" / "numba"),
               **{MARKER_ENV: run})
    return env


def kill_marked(run: str, spare=None) -> int:
    """Kill every process started with ``run`` in its environment (a kernel and whatever it forked, even in another
    session), but ``spare`` (a process id); the number killed."""
    killed = 0
    for proc in psutil.process_iter():
        try:
            if proc.pid not in (os.getpid(), spare) and proc.environ().get(MARKER_ENV) == run:
                proc.kill()
                killed += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return killed


def sandbox_available() -> bool:
    """Whether bubblewrap is installed and can start a process here."""
    if not shutil.which("bwrap"):
        return False
    probe = ["bwrap", "--ro-bind", "/", "/", "--unshare-all", "true"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def sandbox_command(root: Path) -> list:
    """bubblewrap around a kernel: no network, everything read-only, the course's checkout hidden (its virtual
    environment shown read-only again), the workspace writable; the kernel talks to the grader over files in it.
    Not ``--die-with-parent``: the process that starts it may be a thread that ends; ``kill_marked`` ends it."""
    checkout, prefix = course_root(), Path(sys.prefix)
    # as root, every namespace but the user's: the kernel then changes to its own user id (``Limits.uid``)
    unshare = ["--unshare-all"] if os.geteuid() else ["--unshare-ipc", "--unshare-pid", "--unshare-net",
                                                      "--unshare-uts", "--unshare-cgroup-try"]
    cmd = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
           *unshare, "--new-session", "--unsetenv", "JPY_PARENT_PID"]  # its pid means nothing inside
    for hidden in {checkout, PACKAGE.parent}:
        cmd += ["--tmpfs", str(hidden)]
    if checkout in prefix.parents:
        cmd += ["--ro-bind", str(prefix), str(prefix)]
    return cmd + ["--bind", str(root), str(root)]


def remove(root: Path) -> None:
    """Delete a workspace, read-only parts included."""
    for path in [root, *root.rglob("*")]:
        try:
            path.chmod(0o700) if path.is_dir() and not path.is_symlink() else None
        except OSError:
            continue
    shutil.rmtree(root, ignore_errors=True)


def describe(limits: Limits) -> dict:
    """The limits as a plain dict, for the report."""
    return asdict(limits)
