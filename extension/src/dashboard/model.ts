/**
 * State of the Experiments dashboard: this branch's runs beside the base branch's, filtered
 * (plain runs at first: kind `run`), sorted and paged; the metric and parameter charted; the runs
 * selected and their comparison.
 *
 * Runs are read a server page at a time (`GET /cd4ml-nb/runs`, per branch); the table pages
 * through what was read and asks the server for more when its last page is reached.
 */
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { compareRuns, getRuns, getStatus } from '../api';
import { errorMessage } from '../model';
import {
  DEFAULT_KIND,
  formatParams,
  kindOf,
  kindsOf,
  mergeRuns,
  metricNames,
  RunSortKey,
  SortDirection,
  sortRuns
} from '../runs';
import { IBranchRun, IComparison, IRunsSection, IStatus } from '../tokens';
import { parameterNames } from './charts';

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

/** Options of {@link DashboardModel}. */
export interface IDashboardModelOptions {
  settings: ServerConnection.ISettings;
  /** Rows per table page (default 25). */
  pageSize?: number;
  /** Runs asked of the server per branch and request (default 100). */
  serverPageSize?: number;
  /** Metric charted first when the runs logged it. */
  defaultMetric?: string | null;
  /** Branch compared with, instead of the project's `base_branch`. */
  baseBranch?: string | null;
}

/** The dashboard's state; views listen to `changed` and call its methods. */
export class DashboardModel {
  constructor(options: IDashboardModelOptions) {
    this._settings = options.settings;
    this._pageSize = options.pageSize ?? 25;
    this._serverPageSize = options.serverPageSize ?? 100;
    this._defaultMetric = options.defaultMetric ?? null;
    this._baseOverride = options.baseBranch ?? null;
  }

  get changed(): ISignal<DashboardModel, void> {
    return this._changed;
  }

  get settings(): ServerConnection.ISettings {
    return this._settings;
  }

  get status(): IStatus | null {
    return this._status;
  }

  get error(): string | null {
    return this._error;
  }

  get loading(): boolean {
    return this._loading;
  }

  get sections(): ReadonlyArray<IRunsSection> {
    return this._sections;
  }

  /** The base branch compared with: the setting, else the project's. */
  get baseBranch(): string | null {
    return this._baseOverride || this._status?.base_branch || null;
  }

  /** Every run read so far, of both branches. */
  get runs(): ReadonlyArray<IBranchRun> {
    if (this._merged === null) {
      this._merged = mergeRuns(this._sections);
    }
    return this._merged;
  }

  get filter(): IRunFilter {
    return this._filter;
  }

  /** The runs that pass the filter, sorted. */
  get filtered(): ReadonlyArray<IBranchRun> {
    if (this._filtered === null) {
      const kept = this.runs.filter(run => matchesFilter(run, this._filter));
      this._filtered = sortRuns(kept, this._sortKey, this._sortDirection);
    }
    return this._filtered;
  }

  get sortKey(): RunSortKey {
    return this._sortKey;
  }

  get sortDirection(): SortDirection {
    return this._sortDirection;
  }

  get page(): number {
    return this._page;
  }

  get pageSize(): number {
    return this._pageSize;
  }

  /** Pages of what was read (more may be on the server: {@link hasMore}). */
  get pageCount(): number {
    return Math.max(1, Math.ceil(this.filtered.length / this._pageSize));
  }

  /** The rows of the current page. */
  get pageRuns(): ReadonlyArray<IBranchRun> {
    const start = this._page * this._pageSize;
    return this.filtered.slice(start, start + this._pageSize);
  }

  /** Whether the server has more runs of some branch. */
  get hasMore(): boolean {
    return this._sections.some(s => s.nextPageToken !== null);
  }

  get metricNames(): ReadonlyArray<string> {
    return metricNames(this.runs);
  }

  get parameterNames(): ReadonlyArray<string> {
    return parameterNames(this.runs);
  }

  get notebooks(): ReadonlyArray<string> {
    return [...new Set(this.runs.map(r => r.notebook).filter((n): n is string => !!n))].sort();
  }

  get statuses(): ReadonlyArray<string> {
    return [...new Set(this.runs.map(r => r.status))].sort();
  }

  /** The kinds of the runs read, and the kind filtered by even when none of them has it. */
  get kinds(): ReadonlyArray<string> {
    const kinds = kindsOf(this.runs);
    const chosen = this._filter.kind;
    return chosen && !kinds.includes(chosen) ? [chosen, ...kinds] : kinds;
  }

  get metric(): string | null {
    return this._metric;
  }

  get chartParameter(): string | null {
    return this._chartParameter;
  }

  get selected(): ReadonlyArray<string> {
    return this._selected;
  }

  get comparison(): IComparison | null {
    return this._comparison;
  }

  get comparing(): boolean {
    return this._comparing;
  }

  get compareError(): string | null {
    return this._compareError;
  }

  /** Read the status and the first page of runs of both branches. */
  async refresh(): Promise<void> {
    const generation = ++this._generation;
    this._loading = true;
    this._emit();
    try {
      this._status = await getStatus(this._settings);
    } catch (reason) {
      if (generation === this._generation) {
        this._error = errorMessage(reason);
        this._loading = false;
        this._emit();
      }
      return;
    }
    const current = this._status.branch;
    const base = this.baseBranch;
    const wanted: Array<[IRunsSection['side'], string | null]> = [['current', current]];
    if (base && base !== current) {
      wanted.push(['base', base]);
    }
    const sections = await Promise.all(wanted.map(([side, branch]) => this._load(side, branch, null)));
    if (generation !== this._generation || this._disposed) {
      return;
    }
    this._sections = sections;
    this._error = sections.map(s => s.error).find(e => e !== null) ?? null;
    this._loading = false;
    this._invalidate();
    this._pickDefaults();
    this._emit();
  }

  /** Read the next server page of every branch that has more. */
  async loadMore(): Promise<void> {
    const generation = this._generation;
    const more = await Promise.all(
      this._sections.map(s => (s.nextPageToken ? this._load(s.side, s.branch, s.nextPageToken) : null))
    );
    if (generation !== this._generation || this._disposed) {
      return;
    }
    this._sections = this._sections.map((s, i) => {
      const page = more[i];
      return page === null
        ? s
        : { ...s, runs: [...s.runs, ...page.runs], nextPageToken: page.error ? s.nextPageToken : page.nextPageToken, error: page.error };
    });
    this._invalidate();
    this._pickDefaults();
    this._emit();
  }

  setFilter(change: Partial<IRunFilter>): void {
    this._filter = { ...this._filter, ...change };
    this._page = 0;
    this._filtered = null;
    this._emit();
  }

  /** Sort by a column; the same column again reverses the direction. */
  sortBy(key: RunSortKey): void {
    if (key === this._sortKey) {
      this._sortDirection = this._sortDirection === 'asc' ? 'desc' : 'asc';
    } else {
      this._sortKey = key;
      this._sortDirection = key === 'start_time' ? 'desc' : 'asc';
    }
    this._filtered = null;
    this._emit();
  }

  /** Go to a page; past the last page read, more runs are read first when the server has them. */
  async setPage(page: number): Promise<void> {
    if (page >= this.pageCount && this.hasMore) {
      await this.loadMore();
    }
    this._page = Math.max(0, Math.min(page, this.pageCount - 1));
    this._emit();
  }

  setMetric(name: string | null): void {
    this._metric = name;
    this._emit();
  }

  setChartParameter(name: string | null): void {
    this._chartParameter = name;
    this._emit();
  }

  /** Select or unselect a run for comparison (in the order they were picked). */
  toggle(runId: string): void {
    this._selected = this._selected.includes(runId)
      ? this._selected.filter(id => id !== runId)
      : [...this._selected, runId];
    this._emit();
  }

  clearSelection(): void {
    this._selected = [];
    this._comparison = null;
    this._compareError = null;
    this._emit();
  }

  /**
   * Compare the selected runs on the server; a base-branch run, when one is selected,
   * is the reference (first), so deltas read "branch against base".
   */
  async compare(maxRegression = '0'): Promise<IComparison | null> {
    if (this._selected.length < 2) {
      this._compareError = 'Select two or more runs to compare.';
      this._emit();
      return null;
    }
    const side = (id: string) => this.runs.find(r => r.run_id === id)?.side;
    const ids = [...this._selected].sort((a, b) => Number(side(a) !== 'base') - Number(side(b) !== 'base'));
    this._comparing = true;
    this._compareError = null;
    this._emit();
    try {
      this._comparison = await compareRuns(this._settings, {
        run_ids: ids,
        metric: this._metric ?? undefined,
        max_regression: maxRegression
      });
    } catch (reason) {
      this._comparison = null;
      this._compareError = errorMessage(reason);
    }
    this._comparing = false;
    this._emit();
    return this._comparison;
  }

  dispose(): void {
    this._disposed = true;
    Signal.clearData(this);
  }

  private async _load(side: IRunsSection['side'], branch: string | null, token: string | null): Promise<IRunsSection> {
    try {
      const page = await getRuns(this._settings, {
        branch: side === 'base' && branch ? branch : undefined,
        page_token: token ?? undefined,
        max_results: this._serverPageSize
      });
      return { branch, side, runs: page.runs, nextPageToken: page.next_page_token, error: null };
    } catch (reason) {
      return { branch, side, runs: [], nextPageToken: null, error: errorMessage(reason) };
    }
  }

  private _pickDefaults(): void {
    const metrics = this.metricNames;
    if (this._metric === null || !metrics.includes(this._metric)) {
      this._metric =
        this._defaultMetric && metrics.includes(this._defaultMetric) ? this._defaultMetric : metrics[0] ?? null;
    }
    const params = this.parameterNames;
    if (this._chartParameter === null || !params.includes(this._chartParameter)) {
      // The parameter whose value varies most across runs is the interesting one.
      const spread = (name: string) => new Set(this.runs.map(r => r.params?.[name])).size;
      this._chartParameter = [...params].sort((a, b) => spread(b) - spread(a))[0] ?? null;
    }
    const known = new Set(this.runs.map(r => r.run_id));
    this._selected = this._selected.filter(id => known.has(id));
  }

  private _invalidate(): void {
    this._merged = null;
    this._filtered = null;
    this._page = Math.min(this._page, this.pageCount - 1);
  }

  private _emit(): void {
    if (!this._disposed) {
      this._changed.emit();
    }
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _pageSize: number;
  private readonly _serverPageSize: number;
  private readonly _defaultMetric: string | null;
  private readonly _baseOverride: string | null;
  private _changed = new Signal<DashboardModel, void>(this);
  private _status: IStatus | null = null;
  private _error: string | null = null;
  private _loading = false;
  private _sections: IRunsSection[] = [];
  private _merged: IBranchRun[] | null = null;
  private _filtered: IBranchRun[] | null = null;
  private _filter: IRunFilter = DEFAULT_FILTER;
  private _sortKey: RunSortKey = 'start_time';
  private _sortDirection: SortDirection = 'desc';
  private _page = 0;
  private _metric: string | null = null;
  private _chartParameter: string | null = null;
  private _selected: string[] = [];
  private _comparison: IComparison | null = null;
  private _comparing = false;
  private _compareError: string | null = null;
  private _generation = 0;
  private _disposed = false;
}
