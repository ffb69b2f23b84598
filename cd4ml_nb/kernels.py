"""Which kernel a notebook runs on (the configured one, its own kernelspec, or this Python's), and
how the runner talks to it: TCP ports on 127.0.0.1 or Unix sockets in a private folder.

Transport (setting ``kernel_transport``): ``auto`` gives Unix sockets (IPC) to a kernel whose
command is a Python interpreter running ipykernel itself (``python -m ipykernel_launcher -f
{connection_file}``, as ``ipykernel install`` writes it) through jupyter_client's local
provisioner, and TCP to every other kernel: a command wrapping the interpreter (``docker run``,
``srun``, ``conda run``, ``env``) may start it where the runner's socket folder does not exist,
and not every kernel implements IPC. ``tcp`` always uses TCP; ``ipc`` always uses IPC.

A socket folder is ``<temporary folder>/cd4ml-kernel-<pid>-<8 characters>/`` (mode 0700) with an
``owner.json`` naming the process that made it (host, pid, start time). The run removes its
folder when it ends; ``cd4ml-nb gc`` removes those whose owner died first (SIGKILL, out of memory).
"""
from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from .exceptions import BadInput, ConfigError
from .notebooks import Notebook
from .project import Project

TRANSPORTS = ("auto", "tcp", "ipc")
SOCKET_FOLDER = "cd4ml-kernel-"
SOCKET_PATH_MAX = 100  # a Unix socket's path must fit sun_path (104 bytes on macOS, 108 on Linux)
OWNER = "owner.json"
_OWNED = re.compile(re.escape(SOCKET_FOLDER) + r"(\d+)-[a-z0-9_]{8}")  # the pid, then mkdtemp's characters
_PYTHON = re.compile(r"pythonw?(\d+(\.\d+)?)?[td]?(\.exe)?", re.IGNORECASE)  # python, python3.11, python3.13t
_PYTHON_FLAG = re.compile(r"-[bBdEIOPqsSuv]+|-[XW].+")  # e.g. -Xfrozen_modules=off (ipykernel install)
IPYKERNEL_MODULES = ("ipykernel_launcher", "ipykernel")


def default_kernelspec() -> dict[str, str]:
    """The current environment's Python kernel."""
    return {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def kernel_name(project: Project, nb: Notebook, warn: Callable[[str], None], requested: str | None = None) -> str:
    """The installed kernel ``nb`` runs on: ``requested`` (papermill's ``-k``), the configured one or
    the notebook's own (BadInput naming those installed when it is missing);
    a notebook naming none runs on ``python3``, with a warning. A ``kernel_transport = "ipc"``
    this system cannot give is a ConfigError here, before any run exists."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    name = requested or project.config.kernel_name or nb.node.metadata.get("kernelspec", {}).get("name")
    if not name:
        warn(f"{nb.path.name} names no kernel; running it on this environment's Python kernel (python3)")
        name = "python3"
    if name == "python":  # jupyter_client's alias of the native kernel (papermill runs such notebooks)
        name = "python3"
    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        available = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "none"
        raise BadInput(f"{nb.path}: kernel {name!r} is not installed (available: {available})") from None
    if project.config.kernel_transport == "ipc" and (problem := ipc_problem()):
        raise ConfigError(f"kernel_transport = 'ipc': {problem}")
    return name


def launches_ipykernel(argv: list[str]) -> bool:
    """Whether a kernelspec's command is a Python interpreter running ipykernel itself:
    ``python``, ``python3``, ``python3.11``, ``{prefix}/bin/python`` or this interpreter's path,
    optional interpreter flags, then ``-m ipykernel_launcher`` (or ``-m ipykernel``)."""
    if not argv:
        return False
    program = argv[0].replace("\\", "/").rsplit("/", 1)[-1]
    if argv[0] != sys.executable and not _PYTHON.fullmatch(program):
        return False
    rest = argv[1:]
    while rest and rest[0] != "-m":
        skip = 2 if rest[0] in ("-X", "-W") else 1 if _PYTHON_FLAG.fullmatch(rest[0]) else 0
        if not skip:  # -c CODE, a script, or anything else: not recognisably ipykernel
            return False
        rest = rest[skip:]
    return len(rest) >= 2 and rest[1] in IPYKERNEL_MODULES


def ipc_problem() -> str | None:
    """Why kernels cannot talk over Unix sockets here, or None when they can."""
    if os.name != "posix" or not hasattr(socket, "AF_UNIX"):
        return "this system has no Unix sockets"
    longest = os.path.join(tempfile.gettempdir(), f"{SOCKET_FOLDER}{os.getpid()}-{'x' * 8}", "k-65535")
    if len(longest) >= SOCKET_PATH_MAX:
        return (f"the temporary folder {tempfile.gettempdir()} is too deep for a socket's path "
                f"({len(longest)} characters, at most {SOCKET_PATH_MAX - 1}); set TMPDIR to a shorter one")
    return None


def transport(spec: Any, setting: str) -> str:
    """``"ipc"`` or ``"tcp"`` for a kernel of ``spec`` (a jupyter_client ``KernelSpec``; None when
    unknown) under the ``kernel_transport`` ``setting``; ConfigError when ``ipc`` is impossible."""
    if setting not in TRANSPORTS:
        raise ConfigError(f"kernel_transport = {setting!r}: expected one of {', '.join(TRANSPORTS)}")
    if setting == "tcp":
        return "tcp"
    problem = ipc_problem()
    if setting == "ipc":
        if problem:
            raise ConfigError(f"kernel_transport = 'ipc': {problem}")
        return "ipc"
    if problem or spec is None:
        return "tcp"
    provisioner = (spec.metadata or {}).get("kernel_provisioner", {}).get("provisioner_name", "local-provisioner")
    return "ipc" if provisioner == "local-provisioner" and launches_ipykernel(spec.argv) else "tcp"


def make_socket_folder() -> str:
    """A new private folder for one kernel's sockets, recording this process as its owner."""
    import psutil

    folder = tempfile.mkdtemp(prefix=f"{SOCKET_FOLDER}{os.getpid()}-")
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "create_time": psutil.Process().create_time()}
    Path(folder, OWNER).write_text(json.dumps(owner))
    return folder


def socket_folders() -> list[tuple[Path, dict[str, Any]]]:
    """This user's socket folders made on this host, each with its owner: ``{"pid", "create_time"}``
    (``create_time`` None while the record is missing: being written, or its writer was killed)."""
    if os.name != "posix":
        return []
    found = []
    for child in Path(tempfile.gettempdir()).glob(SOCKET_FOLDER + "*"):
        owned = _OWNED.fullmatch(child.name)  # older versions' folders name no owner: left alone
        try:
            info = child.lstat()
        except OSError:
            continue
        if not owned or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        pid = int(owned[1])
        try:
            record = json.loads((child / OWNER).read_text())
        except (OSError, ValueError):
            record = {}
        if not isinstance(record, dict) or record.get("pid") != pid:
            record = {}
        if record and record.get("host") != socket.gethostname():
            continue  # another host or container sharing this folder: its pids are not ours to judge
        found.append((child, {"pid": pid, "create_time": record.get("create_time")}))
    return found
