"""The review report of a pull request: metric deltas, parameters, the paired `.py` diff, links.

Markdown for a PR comment, HTML (with a chart of the metrics per branch) for an artifact.
Every string from runs or git is escaped in the HTML form.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

from . import gitinfo
from .compare import Comparison, GateResult, NotebookComparison, Side, no_base
from .project import Project


@dataclass(frozen=True)
class CodeDiff:
    """The `.py` side of the pairs changed between the base branch and HEAD."""

    files: tuple[str, ...]
    diff: str
    notes: tuple[str, ...]  # .ipynb changed without its .py, etc.


def code_diff(project: Project, base: str) -> CodeDiff:
    """``git diff base...HEAD`` restricted to paired `.py` scripts; never the `.ipynb` JSON."""
    if not project.in_git:
        return CodeDiff((), "", ("not a git repository: no code diff",))

    def git(*args: str) -> gitinfo.Done:
        return gitinfo.run(project.root, *args)

    listed = git("diff", "--name-only", f"{base}...HEAD")
    if listed.returncode != 0:
        return CodeDiff((), "", (f"no code diff: {listed.stderr.strip().splitlines()[0] if listed.stderr else base}",))
    changed = [line for line in listed.stdout.splitlines() if line]
    text_files, notes = [], []
    for name in changed:
        path = project.root / name
        if name.endswith(".py") and (path.with_suffix(".ipynb").exists() or _has_header(path)):
            text_files.append(name)
    for name in changed:
        if name.endswith(".ipynb"):
            sibling = name[: -len(".ipynb")] + ".py"
            if sibling not in text_files:
                notes.append(f"{name} changed but its paired .py did not: run `cd4ml-nb sync {name}` and commit")
    diff = git("diff", f"{base}...HEAD", "--", *text_files).stdout if text_files else ""
    return CodeDiff(tuple(text_files), diff, tuple(notes))


def _has_header(path) -> bool:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:4096].startswith("# ---")
    except OSError:
        return False


def fmt(value: float | None) -> str:
    """A metric value for a table: 6 significant digits, a dash when absent."""
    return "—" if value is None else f"{value:.6g}"


def pct(value: float | None) -> str:
    """A relative change for a table: signed percent, a dash when absent."""
    return "—" if value is None else f"{value:+.2%}"


def _run_link(project: Project, side: Side | None) -> str:
    if side is None or not side.run_id:
        return "no run"
    ui = project.mlflow_ui_url
    if ui and side.experiment_id:
        return f"[{side.run_id[:12]}]({ui}/#/experiments/{side.experiment_id}/runs/{side.run_id})"
    return f"`{side.run_id}`"


def _verdicts(gate: GateResult | None, notebook: str) -> dict[str, str]:
    if gate is None:
        return {}
    return {c.spec.metric: ("✅ pass" if c.passed else "❌ fail") for c in gate.checks if c.notebook == notebook}


def markdown(project: Project, comparison: Comparison, code: CodeDiff, gate: GateResult | None = None) -> str:
    lines = [f"# cd4ml-nb report: `{comparison.branch}` against `{comparison.base}`", ""]
    if gate is not None:
        lines += [f"**Gate: {'passed ✅' if gate.passed else 'FAILED ❌'}**", ""]
        lines += [f"- {c.describe()}" for c in gate.checks] + [f"- {s.describe()}" for s in gate.skipped] + [""]
    if not comparison.notebooks:
        lines += ["No FINISHED runs on either branch yet: run `cd4ml-nb run NOTEBOOK`.", ""]
    for nb in comparison.notebooks:
        lines += _markdown_notebook(project, nb, _verdicts(gate, nb.notebook), comparison)
    lines += ["## Code: paired `.py` changes", ""]
    lines += [f"> {note}" for note in code.notes] + ([""] if code.notes else [])
    if code.diff:
        fence = "````" if "```" in code.diff else "```"
        lines += [f"{len(code.files)} file(s): " + ", ".join(f"`{f}`" for f in code.files), "",
                  f"{fence}diff", code.diff.rstrip("\n"), fence, ""]
    else:
        lines += ["No paired `.py` script changed.", ""]
    return "\n".join(lines)


def _markdown_notebook(project: Project, nb: NotebookComparison, verdicts: dict[str, str],
                       comparison: Comparison) -> list[str]:
    of = f", pipeline step `{comparison.step}`" if comparison.step else ""
    lines = [f"## `{nb.notebook}`", "", f"Runs compared ({comparison.runs}{of}): base {_run_link(project, nb.base)}, "
             f"branch {_run_link(project, nb.branch)}", ""]
    if nb.base is None:
        lines += [f"> {no_base(comparison.base, nb.notebook, comparison.kind)}", ""]
    gate_col = bool(verdicts)
    header = "| metric | goal | base | branch | Δ | Δ% |" + (" gate |" if gate_col else "")
    lines += [header, "|" + "---|" * (6 + gate_col)]
    for d in nb.deltas:
        row = f"| {d.metric} | {d.goal} | {fmt(d.base)} | {fmt(d.branch)} | {fmt(d.delta)} | {pct(d.relative)} |"
        lines.append(row + (f" {verdicts.get(d.metric, '')} |" if gate_col else ""))
    lines.append("")
    if nb.schema_changed:
        lines += [f"**Data schema changed:** {', '.join(f'`{n}`' for n in nb.schema_changed)} "
                  f"(`cd4ml-nb diff {nb.base.run_id} {nb.branch.run_id}` shows the columns)", ""]
    if nb.params_changed:
        lines += ["Parameters changed:", "", "| parameter | base | branch |", "|---|---|---|"]
        lines += [f"| {k} | {a} | {b} |" for k, (a, b) in nb.params_changed.items()] + [""]
    return lines


def html_report(project: Project, comparison: Comparison, code: CodeDiff, gate: GateResult | None = None) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>cd4ml-nb report: {e(comparison.branch)} vs {e(comparison.base)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "th{background:#f4f4f4}td:first-child{text-align:left}.pass{color:#1a7f37}.fail{color:#cf222e}"
        "pre{background:#f6f8fa;padding:1em;overflow:auto}.add{color:#1a7f37}.del{color:#cf222e}</style></head><body>",
        f"<h1>cd4ml-nb report: <code>{e(comparison.branch)}</code> against <code>{e(comparison.base)}</code></h1>",
    ]
    if gate is not None:
        cls = "pass" if gate.passed else "fail"
        parts.append(f"<p class='{cls}'><strong>Gate {'passed' if gate.passed else 'FAILED'}</strong></p><ul>")
        parts += [f"<li class='{'pass' if c.passed else 'fail'}'>{e(c.describe())}</li>" for c in gate.checks]
        parts += [f"<li>{e(s.describe())}</li>" for s in gate.skipped]
        parts.append("</ul>")
    for nb in comparison.notebooks:
        verdicts = _verdicts(gate, nb.notebook)
        parts.append(f"<h2><code>{e(nb.notebook)}</code></h2>")
        if nb.base is None:
            parts.append(f"<p><em>{e(no_base(comparison.base, nb.notebook, comparison.kind))}</em></p>")
        parts.append(_chart(nb, comparison))
        parts.append("<table><tr><th>metric</th><th>goal</th><th>base</th><th>branch</th><th>Δ</th><th>Δ%</th>"
                     + ("<th>gate</th>" if verdicts else "") + "</tr>")
        for d in nb.deltas:
            verdict = verdicts.get(d.metric, "")
            parts.append(f"<tr><td>{e(d.metric)}</td><td>{d.goal}</td><td>{fmt(d.base)}</td><td>{fmt(d.branch)}</td>"
                         f"<td>{fmt(d.delta)}</td><td>{pct(d.relative)}</td>"
                         + (f"<td class='{'pass' if 'pass' in verdict else 'fail'}'>{e(verdict)}</td>" if verdicts else "")
                         + "</tr>")
        parts.append("</table>")
        if nb.schema_changed:
            parts.append(f"<p class='fail'><strong>Data schema changed:</strong> {e(', '.join(nb.schema_changed))}</p>")
        if nb.params_changed:
            parts.append("<table><tr><th>parameter</th><th>base</th><th>branch</th></tr>")
            parts += [f"<tr><td>{e(k)}</td><td>{e(str(a))}</td><td>{e(str(b))}</td></tr>"
                      for k, (a, b) in nb.params_changed.items()]
            parts.append("</table>")
        for label, side in (("base", nb.base), ("branch", nb.branch)):
            link = _run_link(project, side)
            parts.append(f"<p>{label} run: {e(link)}</p>")
    parts.append("<h2>Code: paired <code>.py</code> changes</h2>")
    parts += [f"<p><em>{e(note)}</em></p>" for note in code.notes]
    if code.diff:
        lines = []
        for line in code.diff.splitlines():
            cls = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
            lines.append(f"<span class='{cls}'>{e(line)}</span>" if cls else e(line))
        parts.append("<pre>" + "\n".join(lines) + "</pre>")
    else:
        parts.append("<p>No paired .py script changed.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _chart(nb: NotebookComparison, comparison: Comparison) -> str:
    """An SVG bar chart: one group per metric, base and branch bars scaled to the larger value."""
    deltas = [d for d in nb.deltas if d.base is not None or d.branch is not None]
    if not deltas:
        return ""
    e = html.escape
    width, group, bar, height = 120 * len(deltas) + 40, 120, 36, 160
    colors = {"base": "#8c959f", "branch": "#0969da"}
    out = [f"<svg class='chart' role='img' aria-label='metrics per branch' width='{width}' height='{height + 60}' "
           f"xmlns='http://www.w3.org/2000/svg' font-size='11' font-family='sans-serif'>"]
    for i, d in enumerate(deltas):
        top = max(abs(v) for v in (d.base, d.branch) if v is not None) or 1.0
        x0 = 30 + i * group
        for j, (label, value) in enumerate((("base", d.base), ("branch", d.branch))):
            if value is None:
                continue
            h = abs(value) / top * height
            x = x0 + j * (bar + 4)
            out.append(f"<rect x='{x}' y='{20 + height - h:.1f}' width='{bar}' height='{h:.1f}' fill='{colors[label]}'>"
                       f"<title>{e(label)} {e(d.metric)} = {value:.6g}</title></rect>")
            out.append(f"<text x='{x + bar / 2}' y='{15 + height - h:.1f}' text-anchor='middle'>{value:.3g}</text>")
        out.append(f"<text x='{x0 + bar}' y='{height + 36}' text-anchor='middle'>{e(d.metric)}</text>")
    legend_y = height + 54
    out.append(f"<rect x='30' y='{legend_y - 9}' width='10' height='10' fill='{colors['base']}'/>"
               f"<text x='44' y='{legend_y}'>{e(comparison.base)}</text>"
               f"<rect x='160' y='{legend_y - 9}' width='10' height='10' fill='{colors['branch']}'/>"
               f"<text x='174' y='{legend_y}'>{e(comparison.branch)}</text></svg>")
    return "".join(out)
