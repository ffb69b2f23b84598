/**
 * The dashboard's filter of the runs table: notebook, status, kind, a parameter (`name=value`,
 * a name, or text) and a metric condition (`name<0.5`, `name`).
 */
import { DEFAULT_KIND, formatParams, kindOf } from '../runs';
import { IBranchRun } from '../tokens';

/** What the table is filtered by; empty strings filter nothing. */
export interface IRunFilter {
  /** Notebook path, exactly. */
  notebook: string;
  /** MLflow status, e.g. `FINISHED`. */
  status: string;
  /** Kind of run (`run`, `trial`, `sweep`, …). */
  kind: string;
  /** `name=value`, `name` (logged at all), or text found in `k=v, …`. */
  parameter: string;
  /** `name<0.5`, `name>=2`, `name=1`, or `name` (logged at all). */
  metric: string;
}

export const NO_FILTER: IRunFilter = { notebook: '', status: '', kind: '', parameter: '', metric: '' };

/** The dashboard's filter at first: plain runs only, so this branch and the base compare like with like. */
export const DEFAULT_FILTER: IRunFilter = { ...NO_FILTER, kind: DEFAULT_KIND };

/** A parsed metric condition. */
export interface IMetricCondition {
  name: string;
  op: '<' | '<=' | '>' | '>=' | '=' | null;
  value: number | null;
}

/** `nwrmsle < 0.6` → {name, op, value}; `nwrmsle` → {name, op: null}; `null` when it does not parse. */
export function parseMetricFilter(text: string): IMetricCondition | null {
  const trimmed = text.trim();
  if (!trimmed) {
    return null;
  }
  const match = /^([^<>=\s]+)\s*(<=|>=|<|>|=)\s*(\S+)$/.exec(trimmed);
  if (match) {
    const value = Number(match[3]);
    return Number.isFinite(value)
      ? { name: match[1], op: match[2] as IMetricCondition['op'], value }
      : null;
  }
  return /^[^<>=\s]+$/.test(trimmed) ? { name: trimmed, op: null, value: null } : null;
}

function metricMatches(run: IBranchRun, condition: IMetricCondition): boolean {
  const value = run.metrics?.[condition.name];
  if (typeof value !== 'number') {
    return false;
  }
  const limit = condition.value as number;
  switch (condition.op) {
    case '<':
      return value < limit;
    case '<=':
      return value <= limit;
    case '>':
      return value > limit;
    case '>=':
      return value >= limit;
    case '=':
      return value === limit;
    default:
      return true;
  }
}

function parameterMatches(run: IBranchRun, text: string): boolean {
  const trimmed = text.trim();
  const eq = trimmed.indexOf('=');
  if (eq > 0) {
    const name = trimmed.slice(0, eq).trim();
    const value = trimmed.slice(eq + 1).trim();
    return run.params?.[name] !== undefined && String(run.params[name]) === value;
  }
  if (run.params?.[trimmed] !== undefined) {
    return true;
  }
  return formatParams(run.params).toLowerCase().includes(trimmed.toLowerCase());
}

/** Whether a run passes the filter (an unparsable metric condition filters everything out). */
export function matchesFilter(run: IBranchRun, filter: IRunFilter): boolean {
  if (filter.notebook && run.notebook !== filter.notebook) {
    return false;
  }
  if (filter.status && run.status !== filter.status) {
    return false;
  }
  if (filter.kind && kindOf(run) !== filter.kind) {
    return false;
  }
  if (filter.parameter.trim() && !parameterMatches(run, filter.parameter)) {
    return false;
  }
  if (filter.metric.trim()) {
    const condition = parseMetricFilter(filter.metric);
    return condition !== null && metricMatches(run, condition);
  }
  return true;
}
