/**
 * Vega-Lite specifications of the dashboard's charts (rendered by vega-embed, the library
 * JupyterLab itself renders Vega-Lite output with). Pure functions: the data is inlined, and
 * every point carries the run it stands for, so tooltips name it.
 */
import { formatParams, formatTime } from '../runs';
import { IBranchRun } from '../tokens';

/** A Vega-Lite top-level spec (kept loose: vega-lite's own types are large). */
export type VegaLiteSpec = Record<string, unknown>;

/** One charted point. */
export interface IChartPoint {
  run: string;
  run_id: string;
  branch: string;
  notebook: string;
  time: string;
  value: number;
  x?: number | string;
  sweep?: string;
  params: string;
}

/** The first 8 characters of a run id, as the CLI and the tables show it. */
export function shortRunId(runId: string): string {
  return runId.slice(0, 8);
}

function point(run: IBranchRun, metric: string): IChartPoint | null {
  const value = run.metrics?.[metric];
  if (typeof value !== 'number' || !Number.isFinite(value) || run.start_time === null) {
    return null;
  }
  return {
    run: shortRunId(run.run_id),
    run_id: run.run_id,
    branch: run.branch ?? '(no branch)',
    notebook: run.notebook ?? '',
    time: new Date(run.start_time * 1000).toISOString(),
    value,
    params: formatParams(run.params)
  };
}

const TOOLTIP = (metric: string, extra: Array<Record<string, unknown>> = []) => [
  { field: 'run', type: 'nominal', title: 'Run' },
  { field: 'branch', type: 'nominal', title: 'Branch' },
  { field: 'notebook', type: 'nominal', title: 'Notebook' },
  { field: 'value', type: 'quantitative', title: metric, format: '.5~g' },
  ...extra,
  { field: 'time', type: 'temporal', title: 'Started', format: '%Y-%m-%d %H:%M:%S' },
  { field: 'params', type: 'nominal', title: 'Parameters' }
];

function base(title: string, points: IChartPoint[]): VegaLiteSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    width: 'container',
    height: 260,
    autosize: { type: 'fit-x', contains: 'padding' },
    background: null,
    data: { values: points }
  };
}

/** A metric per branch over time: a line per branch through its runs. */
export function metricOverTime(runs: ReadonlyArray<IBranchRun>, metric: string): VegaLiteSpec {
  const points = runs.map(run => point(run, metric)).filter((p): p is IChartPoint => p !== null);
  return {
    ...base(`${metric} per branch over time`, points),
    encoding: {
      x: { field: 'time', type: 'temporal', title: 'Run started' },
      y: { field: 'value', type: 'quantitative', title: metric, scale: { zero: false } },
      color: { field: 'branch', type: 'nominal', title: 'Branch' }
    },
    layer: [
      { mark: { type: 'line', opacity: 0.6 } },
      {
        mark: { type: 'point', filled: true, size: 80 },
        encoding: { tooltip: TOOLTIP(metric) }
      }
    ]
  };
}

/**
 * A metric against the trial number of a sweep or study: one point per trial, a line per sweep
 * (its parent run), so a search's progress reads left to right.
 */
export function metricAgainstTrial(runs: ReadonlyArray<IBranchRun>, metric: string): VegaLiteSpec {
  const points: IChartPoint[] = [];
  for (const run of runs) {
    const p = typeof run.trial === 'number' ? point(run, metric) : null;
    if (p) {
      points.push({ ...p, x: run.trial as number, sweep: shortRunId(run.parent_run_id ?? '') || '(none)' });
    }
  }
  points.sort((a, b) => (a.x as number) - (b.x as number));
  return {
    ...base(`${metric} against trial number`, points),
    encoding: {
      x: { field: 'x', type: 'quantitative', title: 'Trial', axis: { tickMinStep: 1 } },
      y: { field: 'value', type: 'quantitative', title: metric, scale: { zero: false } },
      color: { field: 'sweep', type: 'nominal', title: 'Sweep' }
    },
    layer: [
      { mark: { type: 'line', opacity: 0.4 } },
      {
        mark: { type: 'point', filled: true, size: 80 },
        encoding: { tooltip: TOOLTIP(metric, [{ field: 'x', title: 'Trial' }, { field: 'sweep', title: 'Sweep' }]) }
      }
    ]
  };
}

/** Whether any run is a numbered trial (then the trial chart is drawn). */
export function hasTrials(runs: ReadonlyArray<IBranchRun>): boolean {
  return runs.some(run => typeof run.trial === 'number');
}

/** Whether every value is a finite number (then the axis is quantitative). */
function numeric(values: ReadonlyArray<string>): boolean {
  return values.length > 0 && values.every(v => v.trim() !== '' && Number.isFinite(Number(v)));
}

/** A metric against a parameter's value: one point per run, coloured by branch. */
export function metricAgainstParameter(
  runs: ReadonlyArray<IBranchRun>,
  metric: string,
  parameter: string
): VegaLiteSpec {
  const withParam = runs.filter(run => run.params?.[parameter] !== undefined);
  const quantitative = numeric(withParam.map(run => String(run.params[parameter])));
  const points: IChartPoint[] = [];
  for (const run of withParam) {
    const p = point(run, metric);
    if (p) {
      const raw = String(run.params[parameter]);
      points.push({ ...p, x: quantitative ? Number(raw) : raw });
    }
  }
  return {
    ...base(`${metric} against ${parameter}`, points),
    mark: { type: 'point', filled: true, size: 80 },
    encoding: {
      x: {
        field: 'x',
        type: quantitative ? 'quantitative' : 'nominal',
        title: parameter,
        scale: quantitative ? { zero: false } : undefined
      },
      y: { field: 'value', type: 'quantitative', title: metric, scale: { zero: false } },
      color: { field: 'branch', type: 'nominal', title: 'Branch' },
      tooltip: TOOLTIP(metric, [{ field: 'x', title: parameter }])
    }
  };
}

/** Parameter names the runs logged, sorted. */
export function parameterNames(runs: ReadonlyArray<IBranchRun>): string[] {
  const names = new Set<string>();
  for (const run of runs) {
    Object.keys(run.params ?? {}).forEach(name => names.add(name));
  }
  return [...names].sort();
}

export { formatTime };
