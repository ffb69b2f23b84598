/**
 * Runs as the table and the chart show them: merged across branches, sorted,
 * with their metric names and MLflow links.
 */
import { URLExt } from '@jupyterlab/coreutils';

import { IBranchRun, IRun, IRunsSection, IStatus } from './tokens';

/** The kinds of run the server knows (`cd4ml_nb.history.KINDS`), in the order the filter lists them. */
export const RUN_KINDS: ReadonlyArray<string> = [
  'run',
  'trial',
  'sweep',
  'test',
  'ci',
  'reproduce',
  'interactive',
  'schedule',
  'pipeline',
  'step'
];

/** The kind the dashboard shows first: plain runs, so branch and base compare like with like. */
export const DEFAULT_KIND = 'run';

/** A run's kind; a server that does not send one lists plain runs. */
export function kindOf(run: Pick<IRun, 'kind'>): string {
  return run.kind || DEFAULT_KIND;
}

/** The kinds of these runs, known ones in {@link RUN_KINDS} order, then any other sorted. */
export function kindsOf(runs: ReadonlyArray<Pick<IRun, 'kind'>>): string[] {
  const present = new Set(runs.map(kindOf));
  const known = RUN_KINDS.filter(kind => present.has(kind));
  const other = [...present].filter(kind => !RUN_KINDS.includes(kind)).sort();
  return [...known, ...other];
}

/** Why a FAILED or KILLED run did not finish, as the server tagged it. */
export interface IRunFailure {
  /** e.g. `cell-exception`, `timeout`, `orphaned`. */
  reason: string | null;
  /** Index of the cell that failed. */
  cell: number | null;
  /** One line. */
  message: string | null;
}

/** The failure of a FAILED or KILLED run; `null` for other runs or when nothing says why. */
export function failureOf(run: IRun): IRunFailure | null {
  if (run.status !== 'FAILED' && run.status !== 'KILLED') {
    return null;
  }
  const cell = typeof run.failed_cell === 'number' ? run.failed_cell : null;
  const failure = { reason: run.reason || null, cell, message: run.message || null };
  return failure.reason === null && failure.cell === null && failure.message === null ? null : failure;
}

/** Columns the runs table sorts by; `metric:NAME` sorts by a metric, `param:NAME` by a parameter. */
export type RunSortKey = 'branch' | 'notebook' | 'kind' | 'status' | 'start_time' | 'params' | string;

export type SortDirection = 'asc' | 'desc';

/** The runs of every section, each with its branch, newest first. */
export function mergeRuns(sections: ReadonlyArray<IRunsSection>): IBranchRun[] {
  const rows: IBranchRun[] = [];
  const seen = new Set<string>();
  for (const section of sections) {
    for (const run of section.runs) {
      if (seen.has(run.run_id)) {
        continue; // base == current, or a run listed on two pages
      }
      seen.add(run.run_id);
      rows.push({ ...run, branch: section.branch, side: section.side });
    }
  }
  return sortRuns(rows, 'start_time', 'desc');
}

/** Every metric name the runs logged, sorted. */
export function metricNames(runs: ReadonlyArray<IBranchRun>): string[] {
  const names = new Set<string>();
  for (const run of runs) {
    for (const name of Object.keys(run.metrics ?? {})) {
      names.add(name);
    }
  }
  return [...names].sort();
}

/** `k=v` of every parameter, sorted by name. */
export function formatParams(params: Record<string, unknown> | null | undefined): string {
  return Object.keys(params ?? {})
    .sort()
    .map(key => `${key}=${String((params as Record<string, unknown>)[key])}`)
    .join(', ');
}

function sortValue(run: IBranchRun, key: RunSortKey): string | number | null {
  if (key.startsWith('metric:')) {
    const value = run.metrics?.[key.slice('metric:'.length)];
    return typeof value === 'number' && !Number.isNaN(value) ? value : null;
  }
  if (key.startsWith('param:')) {
    const value = run.params?.[key.slice('param:'.length)];
    return value === undefined ? null : String(value);
  }
  switch (key) {
    case 'branch':
      return run.branch ?? '';
    case 'notebook':
      return run.notebook ?? '';
    case 'kind':
      return kindOf(run);
    case 'status':
      return run.status;
    case 'start_time':
      return run.start_time;
    case 'params':
      return formatParams(run.params);
    default:
      return null;
  }
}

/**
 * A sorted copy of the runs. Runs without the value go last in either direction;
 * ties keep the newest first.
 */
export function sortRuns(
  runs: ReadonlyArray<IBranchRun>,
  key: RunSortKey,
  direction: SortDirection
): IBranchRun[] {
  const sign = direction === 'asc' ? 1 : -1;
  return runs
    .map((run, index) => ({ run, index, value: sortValue(run, key) }))
    .sort((a, b) => {
      if (a.value === null || b.value === null) {
        if (a.value === b.value) {
          return (b.run.start_time ?? 0) - (a.run.start_time ?? 0) || a.index - b.index;
        }
        return a.value === null ? 1 : -1;
      }
      let order: number;
      if (typeof a.value === 'number' && typeof b.value === 'number') {
        order = a.value - b.value;
      } else {
        order = String(a.value).localeCompare(String(b.value), undefined, { numeric: true });
      }
      return (
        sign * order ||
        (b.run.start_time ?? 0) - (a.run.start_time ?? 0) ||
        a.index - b.index
      );
    })
    .map(item => item.run);
}

/**
 * Whether `url` is an absolute http(s) URL with a host, with nothing a browser would read
 * otherwise (whitespace, control characters, backslashes): the only URLs the extension opens.
 */
export function isWebUrl(url: string | null | undefined): url is string {
  // eslint-disable-next-line no-control-regex
  return !!url && /^https?:\/\/[^/?#\s]+/i.test(url) && !/[\s\x00-\x1f\x7f\\]/.test(url);
}

/**
 * The MLflow UI of the status: the configured one (`mlflow_ui_url`, only when http(s): a
 * repository's `pyproject.toml` may set it), else the one the server proxies under its base URL
 * (`mlflow_ui_proxy`), else `null`.
 */
export function mlflowUiBase(
  status: Pick<IStatus, 'mlflow_ui_url' | 'mlflow_ui_proxy'> | null | undefined,
  baseUrl: string
): string | null {
  if (!status) {
    return null;
  }
  if (status.mlflow_ui_url) {
    return isWebUrl(status.mlflow_ui_url) ? status.mlflow_ui_url : null;
  }
  if (status.mlflow_ui_proxy) {
    return URLExt.join(baseUrl, status.mlflow_ui_proxy).replace(/\/*$/, '/');
  }
  return null;
}

/**
 * Link to a run's page in the MLflow UI, or `null` when there is no UI
 * (or its URL is not http(s)).
 */
export function mlflowRunUrl(
  mlflowUiUrl: string | null | undefined,
  experimentId: string | null | undefined,
  runId: string | null | undefined
): string | null {
  if (!isWebUrl(mlflowUiUrl) || !experimentId || !runId) {
    return null;
  }
  const base = mlflowUiUrl.replace(/\/+$/, '');
  return `${base}/#/experiments/${encodeURIComponent(experimentId)}/runs/${encodeURIComponent(runId)}`;
}

/** A local date and time for epoch seconds. */
export function formatTime(epochSeconds: number | null | undefined): string {
  if (epochSeconds === null || epochSeconds === undefined) {
    return '';
  }
  const date = new Date(epochSeconds * 1000);
  const pad = (n: number) => String(n).padStart(2, '0');
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

/** `MM-DD HH:MM` (local) for epoch seconds, for narrow columns. */
export function formatShortTime(epochSeconds: number | null | undefined): string {
  return formatTime(epochSeconds).slice(5, 16);
}

/** A metric value with at most 4 significant decimals. */
export function formatMetric(value: number | null | undefined): string {
  if (value === null || value === undefined || Number.isNaN(value)) {
    return '';
  }
  if (Number.isInteger(value)) {
    return String(value);
  }
  return Math.abs(value) >= 1e6 || Math.abs(value) < 1e-4
    ? value.toExponential(3)
    : String(Number(value.toPrecision(5)));
}
