"""Team mode's artifact uploads: into the server run's (or server model's) own artifact store, verified.

MLflow's client caches artifact repositories per process by run (or model) id alone; in a runner the
journal's run has the server run's id and a ``file://`` artifact URI in the journal folder, so an
upload through ``MlflowClient.log_artifact`` would get that local repository back and copy the files
onto themselves. Here every repository is built for the server's own artifact URI
(``mlflow-artifacts:/…`` resolved against the tracking server, or whatever store the server names),
and what was sent counts as arrived only once the server lists it with the size it has here.

Errors are MLflow's or ``requests``'s as raised; the forwarder says what they mean.
"""
from __future__ import annotations

import posixpath
from pathlib import Path


def repository(artifact_uri: str, server_uri: str):
    """A new artifact repository for ``artifact_uri`` of the tracking server ``server_uri``."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(artifact_uri, tracking_uri=server_uri)


def listing(repo, path: str | None = None) -> dict[str, int]:
    """Every file under ``path`` (all, by default) as the repository lists it: relative path -> size."""
    found: dict[str, int] = {}
    for info in repo.list_artifacts(path):
        if info.is_dir:
            found.update(listing(repo, info.path))
        else:
            found[info.path] = int(info.file_size or 0)
    return found


def arrived(repo, expected: dict[str, int]) -> set[str]:
    """Of ``expected`` (relative path -> size here), the files the repository lists with that size."""
    folders: dict[str, dict[str, int]] = {}
    for rel in expected:
        folder = posixpath.dirname(rel)
        if folder not in folders:
            folders[folder] = {info.path: int(info.file_size or 0) for info in repo.list_artifacts(folder or None)
                               if not info.is_dir}
    return {rel for rel, size in expected.items() if folders[posixpath.dirname(rel)].get(rel) == size}


def upload_file(repo, local: Path, rel: str) -> None:
    """Send one file to ``rel`` (a path relative to the repository's root)."""
    repo.log_artifact(str(local), posixpath.dirname(rel) or None)


def upload_tree(repo, local_dir: Path) -> list[str]:
    """Send every file under ``local_dir`` to the repository's root; the files that did not arrive
    whole (missing, or another size on the server)."""
    mine = {p.relative_to(local_dir).as_posix(): p.stat().st_size for p in local_dir.rglob("*") if p.is_file()}
    if not mine:
        return []
    repo.log_artifacts(str(local_dir))
    theirs = listing(repo)
    return sorted(rel for rel, size in mine.items() if theirs.get(rel) != size)
