/**
 * The runs of the open notebook on the current branch and on the base branch, as the panel
 * lists them, read through the shared runs source, and the metric shown first.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { mergeRuns, metricNames } from '../runs';
import { IBranchRun, IRunsScope, IRunsSection, IRunsSource } from '../tokens';
import { IStatusSource } from './status';

/** What changed: the runs (or whether they are loading), or the metric shown first. */
export type RunsChange = 'runs' | 'metric';

/** Options of {@link NotebookRunsModel}. */
export interface INotebookRunsOptions {
  /** The runs source shared with the dashboard. */
  source: IRunsSource;
  /** The branch and base branch the runs are read for. */
  status: IStatusSource;
  /** Runs asked for per branch and page (default 50). */
  pageSize?: number;
  /** Metrics to show first when the runs logged them (e.g. the last job's). */
  preferredMetrics?: () => ReadonlyArray<string>;
}

/** The open notebook's runs; read again whenever the source is invalidated (a job ended). */
export class NotebookRunsModel {
  constructor(options: INotebookRunsOptions) {
    this._source = options.source;
    this._status = options.status;
    this._pageSize = options.pageSize ?? 50;
    this._preferred = options.preferredMetrics ?? (() => []);
    this._source.invalidated.connect(this._onInvalidated, this);
  }

  get changed(): ISignal<NotebookRunsModel, RunsChange> {
    return this._changed;
  }

  get sections(): ReadonlyArray<IRunsSection> {
    return this._sections;
  }

  get loading(): boolean {
    return this._loading;
  }

  /** Runs of both branches, with their branch, newest first. */
  get allRuns(): ReadonlyArray<IBranchRun> {
    if (this._allRuns === null) {
      this._allRuns = mergeRuns(this._sections);
    }
    return this._allRuns;
  }

  get metricNames(): ReadonlyArray<string> {
    return metricNames(this.allRuns);
  }

  get metric(): string | null {
    return this._metric;
  }

  /** Follow another notebook (or none): no runs until they are read; emits nothing. */
  setNotebook(path: string | null): void {
    this._path = path;
    this._generation++;
    this._sections = [];
    this._allRuns = null;
    this._loading = false;
  }

  /** Read the first page of the notebook's runs on both branches (the status first, if unknown). */
  async refresh(): Promise<void> {
    const path = this._path;
    if (path === null) {
      return;
    }
    if (this._status.status === null) {
      await this._status.refreshStatus();
    }
    const generation = ++this._generation;
    this._loading = true;
    this._emit('runs');
    const sections = await this._source.load(this._scope(path));
    if (generation !== this._generation || path !== this._path || this._isDisposed) {
      return;
    }
    this._loading = false;
    this._apply(sections);
  }

  /** Read the next page of one branch's runs. */
  async loadMore(side: IRunsSection['side']): Promise<void> {
    const path = this._path;
    const section = this._sections.find(s => s.side === side);
    if (path === null || !section || !section.nextPageToken) {
      return;
    }
    const generation = this._generation;
    const sections = await this._source.loadMore(this._scope(path), side);
    if (sections === null || generation !== this._generation || this._isDisposed) {
      return;
    }
    this._apply(sections);
  }

  setMetric(name: string | null): void {
    if (name !== this._metric) {
      this._metric = name;
      this._emit('metric');
    }
  }

  dispose(): void {
    this._isDisposed = true;
    this._source.invalidated.disconnect(this._onInvalidated, this);
    Signal.clearData(this);
  }

  private _scope(path: string): IRunsScope {
    const status = this._status.status;
    return {
      current: status?.branch ?? null,
      base: status?.base_branch || null,
      notebook: path,
      pageSize: this._pageSize
    };
  }

  private _apply(sections: IRunsSection[]): void {
    this._sections = sections;
    this._allRuns = null;
    this._pickMetric();
    this._emit('runs');
  }

  /** Keep the metric while the runs log it; else the preferred one they log, else the first. */
  private _pickMetric(): void {
    const names = this.metricNames;
    if (this._metric !== null && names.includes(this._metric)) {
      return;
    }
    const preferred = this._preferred().find(name => names.includes(name));
    this.setMetric(preferred ?? names[0] ?? null);
  }

  private _onInvalidated(): void {
    void this.refresh();
  }

  private _emit(change: RunsChange): void {
    if (!this._isDisposed) {
      this._changed.emit(change);
    }
  }

  private readonly _source: IRunsSource;
  private readonly _status: IStatusSource;
  private readonly _pageSize: number;
  private readonly _preferred: () => ReadonlyArray<string>;
  private readonly _changed = new Signal<NotebookRunsModel, RunsChange>(this);
  private _isDisposed = false;
  private _path: string | null = null;
  private _generation = 0;
  private _sections: IRunsSection[] = [];
  private _loading = false;
  private _allRuns: IBranchRun[] | null = null;
  private _metric: string | null = null;
}
