"""The set-up a tracked run's kernel executes before the notebook's first cell, and how it does.

The code runs silently (``silent=True``: no cell, no history entry, no execution count) through the
run's kernel client before the first cell, so the executed notebook is cell for cell what papermill
writes. It makes the kernel attach to the run once the notebook first imports ``mlflow`` (waiting
for the run id then), so a notebook that never uses MLflow never loads it.
"""
from __future__ import annotations

from typing import Any

SETUP_TIMEOUT = 60.0  # seconds the kernel may take to run the set-up (it defines a hook, nothing more)

SETUP_CODE = '''\
# Injected by cd4ml-nb: once the notebook imports mlflow, it logs to the run of this execution.
def _cd4ml_attach(handoff, timeout):
    import importlib.util, json, os, sys, time

    def attach(mlflow):
        deadline = time.monotonic() + timeout
        while not os.path.exists(handoff):
            if time.monotonic() > deadline:
                raise RuntimeError("cd4ml-nb: the MLflow run was not created in time")
            time.sleep(0.02)
        with open(handoff) as f:
            run = json.load(f)
        if run.get("error"):
            raise RuntimeError("cd4ml-nb: " + run["error"])
        os.environ.update(MLFLOW_TRACKING_URI=run["tracking_uri"], MLFLOW_EXPERIMENT_ID=run["experiment_id"])
        import logging
        for name in ("mlflow.store", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        mlflow.set_tracking_uri(run["tracking_uri"])
        mlflow.start_run(run_id=run["run_id"])

    if "mlflow" in sys.modules:
        return attach(sys.modules["mlflow"])

    class Finder:  # a post-import hook: attach right after mlflow is first imported
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name != "mlflow":
                return None
            sys.meta_path.remove(Finder)
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.loader is not None:
                run_module = spec.loader.exec_module

                def exec_module(module):
                    run_module(module)
                    attach(module)
                spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder)
_cd4ml_attach({handoff!r}, {timeout!r})
del _cd4ml_attach
'''


class SetupError(RuntimeError):
    """The kernel could not run the set-up: the run cannot be tracked."""


def setup_code(handoff: str, timeout: float) -> str:
    """The set-up for a run whose kernel finds the run id in the file ``handoff``."""
    return SETUP_CODE.format(handoff=handoff, timeout=timeout)


async def run_silently(kc: Any, code: str, timeout: float = SETUP_TIMEOUT) -> None:
    """Execute ``code`` silently through ``kc``, the run's own kernel client, before its first cell
    (SetupError if it raises). A second client of the same kernel manager would share its session,
    and the run's client then never hears from the kernel again."""
    import asyncio

    msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        reply = await kc.get_shell_msg(timeout=max(deadline - loop.time(), 0.01))
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            break
    content = reply["content"]
    if content.get("status") != "ok":
        raise SetupError(f"{content.get('ename', 'error')}: {content.get('evalue', '')}")
