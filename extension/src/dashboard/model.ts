/**
 * State of the Experiments dashboard: this branch's runs beside the base branch's, filtered
 * (plain runs at first: kind `run`), sorted and paged; the metric and parameter charted; the runs
 * selected and their comparison.
 *
 * Runs are read a server page at a time through the runs source the panel shares (so a job that
 * ends updates both); the table pages through what was read and asks for more when its last page
 * is reached.
 */
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { RunsSource } from '../models/runsSource';
import { IStatusSource, StatusModel } from '../models/status';
import { kindsOf, mergeRuns, metricNames, RunSortKey, SortDirection, sortRuns } from '../runs';
import { IBranchRun, IComparison, IRunsScope, IRunsSection, IRunsSource, IStatus } from '../tokens';
import { parameterNames } from './charts';
import { RunComparison } from './comparison';
import { DEFAULT_FILTER, IRunFilter, matchesFilter } from './filter';

/** Options of {@link DashboardModel}. */
export interface IDashboardModelOptions {
  settings: ServerConnection.ISettings;
  /** The runs source shared with the panel (default: one of this model's own). */
  runs?: IRunsSource;
  /** Where the branch comes from: the experiments model (default: a status model of its own). */
  status?: IStatusSource;
  /** Rows per table page (default 25). */
  pageSize?: number;
  /** Runs asked of the server per branch and request (default 100). */
  serverPageSize?: number;
  /** Metric charted first when the runs logged it. */
  defaultMetric?: string | null;
  /** Branch compared with, instead of the project's `base_branch`. */
  baseBranch?: string | null;
}

/** What the dashboard's settings change while it is open. */
export type DashboardConfig = Pick<IDashboardModelOptions, 'pageSize' | 'defaultMetric' | 'baseBranch'>;

/**
 * The dashboard's state; views listen to `changed` and call its methods. It reads again when the
 * runs source is invalidated (a job of the panel ended).
 */
export class DashboardModel {
  constructor(options: IDashboardModelOptions) {
    this._settings = options.settings;
    this._ownSource = options.runs === undefined;
    this._source = options.runs ?? new RunsSource({ settings: options.settings });
    this._statusSource = options.status ?? new StatusModel({ settings: options.settings });
    this._pageSize = options.pageSize ?? 25;
    this._serverPageSize = options.serverPageSize ?? 100;
    this._defaultMetric = options.defaultMetric || null;
    this._baseOverride = options.baseBranch || null;
    this._compare = new RunComparison(options.settings, () => this._emit());
    this._source.invalidated.connect(this._onInvalidated, this);
  }

  get changed(): ISignal<DashboardModel, void> {
    return this._changed;
  }

  get settings(): ServerConnection.ISettings {
    return this._settings;
  }

  get status(): IStatus | null {
    return this._statusSource.status;
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
    return this._baseOverride || this.status?.base_branch || null;
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
    return this._compare.selected;
  }

  get comparison(): IComparison | null {
    return this._compare.comparison;
  }

  get comparing(): boolean {
    return this._compare.comparing;
  }

  get compareError(): string | null {
    return this._compare.error;
  }

  /** Read the status and the first page of runs of both branches. */
  async refresh(): Promise<void> {
    const generation = ++this._generation;
    this._loading = true;
    this._emit();
    await this._statusSource.refreshStatus();
    const status = this._statusSource.status;
    const statusError = this._statusSource.statusError;
    if (statusError !== null || status === null) {
      if (generation === this._generation) {
        this._error = statusError;
        this._loading = false;
        this._emit();
      }
      return;
    }
    const scope: IRunsScope = { current: status.branch, base: this.baseBranch, pageSize: this._serverPageSize };
    const sections = await this._source.load(scope);
    if (generation !== this._generation || this._disposed) {
      return;
    }
    this._scope = scope;
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
    const sections = this._scope ? await this._source.loadMore(this._scope) : null;
    if (sections === null || generation !== this._generation || this._disposed) {
      return;
    }
    this._sections = sections;
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
    this._compare.toggle(runId);
  }

  clearSelection(): void {
    this._compare.clear();
  }

  /** Compare the selected runs on the server, a base-branch run first, with the metric charted. */
  compare(maxRegression = '0'): Promise<IComparison | null> {
    return this._compare.compare(this.runs, this._metric, maxRegression);
  }

  /**
   * Apply settings changed while the dashboard is open: the rows per page (the first row shown
   * stays on the page shown), the metric charted first, the branch compared with (read again).
   */
  configure(config: DashboardConfig): void {
    let changed = false;
    if (config.pageSize !== undefined && config.pageSize !== this._pageSize && config.pageSize > 0) {
      const first = this._page * this._pageSize;
      this._pageSize = config.pageSize;
      this._page = Math.min(Math.floor(first / this._pageSize), this.pageCount - 1);
      changed = true;
    }
    if (config.defaultMetric !== undefined && (config.defaultMetric || null) !== this._defaultMetric) {
      this._defaultMetric = config.defaultMetric || null;
      if (this._defaultMetric !== null && this.metricNames.includes(this._defaultMetric)) {
        this._metric = this._defaultMetric;
      }
      changed = true;
    }
    if (config.baseBranch !== undefined && (config.baseBranch || null) !== this._baseOverride) {
      this._baseOverride = config.baseBranch || null;
      void this.refresh();
      return;
    }
    if (changed) {
      this._emit();
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._source.invalidated.disconnect(this._onInvalidated, this);
    if (this._ownSource) {
      this._source.dispose();
    }
    Signal.clearData(this);
  }

  private _onInvalidated(): void {
    void this.refresh();
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
    this._compare.keep(this.runs);
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
  private readonly _source: IRunsSource;
  private readonly _ownSource: boolean;
  private readonly _statusSource: IStatusSource;
  private readonly _serverPageSize: number;
  private _pageSize: number;
  private _defaultMetric: string | null;
  private _baseOverride: string | null;
  private _scope: IRunsScope | null = null;
  private _changed = new Signal<DashboardModel, void>(this);
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
  private readonly _compare: RunComparison;
  private _generation = 0;
  private _disposed = false;
}
