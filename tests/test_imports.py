"""Start-up stays light: `import cd4ml_nb` and `cd4ml-nb --help` load no heavy library."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["mlflow", "papermill", "nbconvert", "tornado", "nbformat", "jupytext", "jupyter_server", "pandas"]

PROBE = """
import json, sys
{code}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def loaded_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_is_light():
    assert loaded_after("import cd4ml_nb") == []


def test_help_is_light():
    code = "from cd4ml_nb.cli import main\nimport contextlib, io\nwith contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])"
    assert loaded_after(code) == []
    code = code.replace("['--help']", "['run', '--help']")
    assert loaded_after(code) == []


def test_lazy_public_api_resolves():
    assert loaded_after("import cd4ml_nb\ncd4ml_nb.run_notebook\ncd4ml_nb.track") == []
    import cd4ml_nb

    assert callable(cd4ml_nb.run_notebook) and callable(cd4ml_nb.track)
