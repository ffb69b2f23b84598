"""Which kernel a notebook runs on: the configured one, its own kernelspec, or this Python's."""
from __future__ import annotations

from typing import Callable

from .exceptions import BadInput
from .notebooks import Notebook
from .project import Project


def default_kernelspec() -> dict[str, str]:
    """The current environment's Python kernel."""
    return {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def kernel_name(project: Project, nb: Notebook, warn: Callable[[str], None]) -> str:
    """The installed kernel ``nb`` runs on (BadInput naming those installed when it is missing);
    a notebook naming none runs on ``python3``, with a warning."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    name = project.config.kernel_name or nb.node.metadata.get("kernelspec", {}).get("name")
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
    return name
