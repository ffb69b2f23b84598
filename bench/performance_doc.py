"""docs/performance.md: each benchmark owns one section (a ``## `` heading) and replaces it whole."""
from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def write_section(section: str, body: str, path: Path = DOC) -> None:
    """Replace the section headed ``section`` (``body`` starts with that heading), or append it."""
    text = path.read_text()
    if section in text:
        head, _, rest = text.partition(section)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        text = head + body + tail
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)
    print(f"wrote {path.relative_to(path.parent.parent)}")



def machine_and_day() -> tuple[str, str]:
    """(``arch, N cores, Python X.Y.Z``, today's UTC date): where and when a section's figures were measured."""
    import os
    import platform
    from datetime import datetime, timezone

    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            f"{datetime.now(timezone.utc):%Y-%m-%d}")
