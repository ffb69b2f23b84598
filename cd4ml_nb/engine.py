"""The papermill engine cd4ml-nb runs notebooks with, registered once as ``cd4ml``.

Papermill's documented extension point: the entry point ``papermill.engine: cd4ml`` names
:class:`cd4ml_nb.papermill_door.Engine` (this engine, recording papermill's own runs); registered
in code too when the package metadata is absent. Everything a run needs from the engine comes
as one engine keyword argument, ``cd4ml_hooks`` (:class:`Hooks`), so runs sharing a process
(sweep trials, Lab jobs) share the engine:

- progress after each cell, through nbclient's public ``on_cell_executed`` hook;
- the kernel's working directory through nbclient's ``resources["metadata"]["path"]`` (papermill's
  ``cwd=`` changes the whole process's directory, which concurrent trials would race on);
- cancel: the kernel is shut down with ``KernelManager.shutdown_kernel(now=True)`` on the
  execution's own event loop;
- transport (``Hooks.transport``, the ``kernel_transport`` setting; :func:`kernels.transport`
  decides): a Python interpreter running ipykernel on this host talks over Unix sockets in a
  private temporary folder (:func:`kernels.make_socket_folder`) rather than TCP ports on
  127.0.0.1. jupyter_client picks TCP ports by binding and releasing them before the kernel binds,
  so concurrent runs (sweeps, Lab jobs, CI) can pick the same port and a kernel dies at start;
  ipykernel 7 also warns on every TCP start. Other kernel commands keep TCP (a wrapper such as
  ``docker run`` may start the kernel where the folder is not; not every kernel implements IPC).
- once the last cell has executed, the kernel is shut down without jupyter_client's interrupt first,
  which could land inside the handler of papermill's last request and log a ``KeyboardInterrupt``
  in a run that succeeded (a run stopped mid-cell is still interrupted first);
- the kernel's standard error goes to a log file (``Hooks.kernel_log``, in the run's folder), not
  to the user's terminal: an ipykernel shut down in the middle of a cell (Ctrl-C, SIGTERM, a
  cancelled job) prints tracebacks there (``ZMQError: Socket operation on non-socket``) about
  its own closed sockets, which say nothing about the run. Nor does asyncio's "Task exception was
  never retrieved" report of nbclient's cell task when the kernel dies under an interrupt: the run
  already ends with that reason (:class:`QuietDeadKernel` keeps it at debug level).
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillException

from . import kernels

log = logging.getLogger(__name__)

NAME = "cd4ml"


class QuietDeadKernel(logging.Filter):
    """Keeps asyncio's report of an abandoned nbclient task whose kernel died (an interrupted or
    cancelled run, already ended with its reason) off the terminal, at debug level here."""

    def filter(self, record: logging.LogRecord) -> bool:
        from nbclient.exceptions import DeadKernelError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, DeadKernelError) and "never retrieved" in record.getMessage():
            log.debug("abandoned cell task of a dead kernel: %s", error)
            return False
        return True


logging.getLogger("asyncio").addFilter(QuietDeadKernel())


@dataclass
class Hooks:
    """Per-run callbacks and the handles a cancel needs (mutable: filled in as the run starts)."""

    cwd: str
    on_progress: Callable[[int, int], None] | None = None
    kernel_log: str | None = None  # the file the kernel's stderr is appended to (None: inherited)
    transport: str = "auto"  # the kernel_transport setting: auto, tcp or ipc
    setup: str | None = None  # code the kernel runs silently before the first cell (:mod:`attach`)
    papermill_paths: tuple[str, str] | None = None  # metadata.papermill's input_path and output_path
    cell_error: dict[str, Any] | None = None  # the failing cell's own error (index, ename, evalue, traceback)
    cancelled: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _km: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cancel(self) -> None:
        """Stop the kernel now (from any thread); before it starts, it is stopped once it has."""
        with self._lock:
            self.cancelled.set()
            loop, km = self._loop, self._km
        if loop is not None and km is not None and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(km.shutdown_kernel(now=True), loop)
            except RuntimeError:  # the loop closed meanwhile: the kernel is already gone
                pass

    async def _started(self, km, kc, total: int) -> None:
        with self._lock:
            self._loop, self._km = asyncio.get_running_loop(), km
            cancelled = self.cancelled.is_set()
        if cancelled:
            await km.shutdown_kernel(now=True)
            return
        if self.setup is not None:
            from .attach import run_silently

            await run_silently(kc, self.setup)
        if self.on_progress is not None:
            self.on_progress(0, total)


class Engine(NBClientEngine):
    """papermill's nbclient engine, with the :class:`Hooks` of the run it executes (papermill's own
    command and API get :class:`cd4ml_nb.papermill_door.Engine`, which records a run)."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
        hooks: Hooks | None = kwargs.pop("cd4ml_hooks", None)
        if hooks is None:
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
        if hooks.papermill_paths is not None:
            nb_man.nb.metadata.papermill.update(zip(("input_path", "output_path"), hooks.papermill_paths))
        total = len(nb_man.nb.cells)
        managers: list = []
        clients: list = []
        sockets: list[str] = []  # private folders of this run's IPC kernels
        logs: list = []  # open kernel_log files, closed when the execution ends
        completed: list = []  # not empty once the last cell has executed

        from jupyter_client.manager import AsyncKernelManager

        class KernelManager(AsyncKernelManager):  # lets the hooks reach this run's kernel
            def __init__(self, **traits):
                super().__init__(**traits)
                managers.append(self)
                if kernels.transport(_spec(self), hooks.transport) == "ipc":
                    sockets.append(kernels.make_socket_folder())
                    self.transport, self.ip = "ipc", os.path.join(sockets[-1], "k")

            def client(self, **kw):  # nbclient's client of this kernel (the set-up runs through it)
                clients.append(super().client(**kw))
                return clients[-1]

            async def start_kernel(self, **kw):  # kw reach Popen: jupyter_client's documented way
                if hooks.kernel_log and "stderr" not in kw:
                    logs.append(open(hooks.kernel_log, "ab"))
                    kw["stderr"] = logs[-1]
                await super().start_kernel(**kw)

            async def shutdown_kernel(self, now: bool = False, restart: bool = False):
                self.quiet_end = not now and bool(completed)
                await super().shutdown_kernel(now=now, restart=restart)

            async def _async_interrupt_kernel(self):
                # jupyter_client interrupts a kernel before every shutdown. After the last cell the
                # kernel is idle, or still inside the handler of papermill's last request, where the
                # SIGINT makes it log "KeyboardInterrupt caught in kernel." in a run that succeeded:
                # then the shutdown request alone ends it. A run stopped mid-cell keeps the interrupt.
                if getattr(self, "quiet_end", False) and self.shutting_down:
                    return
                await super()._async_interrupt_kernel()

        async def on_notebook_start(notebook):
            await hooks._started(managers[-1], clients[-1], total)

        def on_cell_error(cell, cell_index, execute_reply):
            content = execute_reply.get("content", {})
            hooks.cell_error = {"index": cell_index, "ename": content.get("ename"), "evalue": content.get("evalue"),
                                "traceback": content.get("traceback", [])}

        def on_cell_executed(cell, cell_index, execute_reply):
            if cell_index + 1 == total:
                completed.append(True)
            if hooks.on_progress is not None:
                hooks.on_progress(cell_index + 1, total)

        kwargs.update(kernel_manager_class=KernelManager, on_notebook_start=on_notebook_start,
                      on_cell_executed=on_cell_executed, on_cell_error=on_cell_error,
                      resources={"metadata": {"path": hooks.cwd}})
        try:
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
        finally:
            for folder in sockets:
                shutil.rmtree(folder, ignore_errors=True)
            for log in logs:
                log.close()


def _spec(km) -> Any:
    """The kernelspec ``km`` starts, or None when it is unknown."""
    try:
        return km.kernel_spec
    except Exception as e:  # an unknown kernel: starting it reports that, in jupyter_client's words
        log.debug("kernelspec %s not found: %s", getattr(km, "kernel_name", "?"), e)
        return None


def ensure_registered() -> str:
    """The engine's name, registering it unless papermill found it through its entry point."""
    try:
        papermill_engines.get_engine(NAME)
    except PapermillException:  # unknown: not registered through the entry point
        papermill_engines.register(NAME, Engine)
    return NAME
