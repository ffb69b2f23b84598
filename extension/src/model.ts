/**
 * State of the Experiments panel, composed of one model per concern (`models/`): the server's
 * status, the active notebook's pairing and parameter form, the job being run, and the notebook's
 * runs on this branch and the base branch, read through the runs source the dashboard shares.
 *
 * This model follows the active notebook, relays every part's changes as one `changed` signal,
 * and ties the parts together: a sync re-reads the form, a job that ends invalidates the runs
 * source (the panel and the dashboard read again), a branch change re-reads the runs.
 * Views listen to `changed` and read the state; they never call the REST API themselves.
 */
import { ServerConnection } from '@jupyterlab/services';
import { nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';

import { JobsModel } from './models/jobs';
import { NotebookRunsModel } from './models/notebookRuns';
import { PairingModel } from './models/pairing';
import { ParameterFormModel } from './models/parameterForm';
import { RunsSource } from './models/runsSource';
import { StatusModel } from './models/status';
import { isExecutedCopy } from './paths';
import { mlflowRunUrl } from './runs';
import {
  ExperimentsChange,
  IBranchRun,
  IExperimentsModel,
  IFieldState,
  IJob,
  IPairing,
  IParamsContract,
  IRunsSection,
  IRunsSource,
  IStatus,
  PairSide
} from './tokens';

/** Options of {@link ExperimentsModel}. */
export interface IExperimentsModelOptions {
  /** Connection to the Jupyter server (base URL, token). */
  settings: ServerConnection.ISettings;
  /** Milliseconds between two polls of a running job (default 1000). */
  pollInterval?: number;
  /** Runs asked for per branch and page (default 50). */
  pageSize?: number;
  /** Milliseconds after the last keystroke before the server checks the form (default 150). */
  checkDelay?: number;
  /** Translation of the messages the model builds (domain `cd4ml_nb`; default: untranslated). */
  trans?: TranslationBundle;
  /** The runs source shared with the dashboard (default: one of this model's own). */
  runs?: IRunsSource;
}

/**
 * The experiments model: one per JupyterLab, shared by the panel, the status bar
 * and the commands.
 */
export class ExperimentsModel implements IExperimentsModel {
  constructor(options: IExperimentsModelOptions) {
    const { settings } = options;
    this._trans = options.trans ?? nullTranslator.load('cd4ml_nb');
    this._ownSource = options.runs === undefined;
    this._source = options.runs ?? new RunsSource({ settings });
    this._status = new StatusModel({ settings });
    this._pairing = new PairingModel({ settings });
    this._form = new ParameterFormModel({ settings, checkDelay: options.checkDelay, trans: this._trans });
    this._jobs = new JobsModel({ settings, pollInterval: options.pollInterval, trans: this._trans });
    this._runs = new NotebookRunsModel({
      source: this._source,
      status: this._status,
      pageSize: options.pageSize,
      preferredMetrics: () => Object.keys(this._jobs.job?.metrics ?? {})
    });

    this._status.changed.connect(() => this._emit('status'));
    this._pairing.changed.connect((_, change) => {
      this._emit(change);
      if (change === 'synced') {
        void this._form.refresh(); // the parameters cell may have changed with the other side
      }
    });
    this._form.changed.connect((_, change) => this._emit(change));
    this._jobs.changed.connect(() => this._emit('job'));
    this._jobs.ended.connect(() => this._source.invalidate());
    this._runs.changed.connect((_, change) => this._emit(change));
  }

  get changed(): ISignal<IExperimentsModel, ExperimentsChange> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** The runs source this model reads through (shared with the dashboard). */
  get runsSource(): IRunsSource {
    return this._source;
  }

  /** Milliseconds between two polls of a running job; a change applies to the job followed now. */
  get pollInterval(): number {
    return this._jobs.pollInterval;
  }

  set pollInterval(interval: number) {
    this._jobs.pollInterval = interval;
  }

  get status(): IStatus | null {
    return this._status.status;
  }

  get statusError(): string | null {
    return this._status.statusError;
  }

  get notebookPath(): string | null {
    return this._notebookPath;
  }

  get notebookDirty(): boolean {
    return this._notebookDirty;
  }

  get pairing(): IPairing | null {
    return this._pairing.pairing;
  }

  get pairingError(): string | null {
    return this._pairing.pairingError;
  }

  get pairingDiff(): string | null {
    return this._pairing.pairingDiff;
  }

  get pairingBusy(): boolean {
    return this._pairing.pairingBusy;
  }

  get syncDone(): string | null {
    return this._pairing.syncDone;
  }

  get contract(): IParamsContract | null {
    return this._form.contract;
  }

  get contractError(): string | null {
    return this._form.contractError;
  }

  get fields(): ReadonlyArray<IFieldState> {
    return this._form.fields;
  }

  get job(): IJob | null {
    return this._jobs.job;
  }

  get jobError(): string | null {
    return this._jobs.jobError;
  }

  get submitting(): boolean {
    return this._jobs.submitting;
  }

  get jobActive(): boolean {
    return this._jobs.jobActive;
  }

  get cancelState(): 'cancelling' | 'cancelled' | null {
    return this._jobs.cancelState;
  }

  get runs(): ReadonlyArray<IRunsSection> {
    return this._runs.sections;
  }

  get runsLoading(): boolean {
    return this._runs.loading;
  }

  get allRuns(): ReadonlyArray<IBranchRun> {
    return this._runs.allRuns;
  }

  get metricNames(): ReadonlyArray<string> {
    return this._runs.metricNames;
  }

  get metric(): string | null {
    return this._runs.metric;
  }

  /** Whether the notebook followed is an executed copy (no form, no pairing, no run). */
  get executedCopy(): boolean {
    return isExecutedCopy(this._notebookPath);
  }

  /** Why Run is disabled now, `null` when it is not. */
  get runBlocked(): string | null {
    const blocked = this._form.blocked;
    if (blocked !== null) {
      return blocked;
    }
    return this.executedCopy
      ? this._trans.__('This is an executed copy of a run: open the source notebook to run it.')
      : null;
  }

  /**
   * Read `GET /cd4ml-nb/status`. When the branch changed, the runs source is invalidated (the
   * dashboard reads the new branch's runs too) and this notebook's runs are read again.
   */
  async refreshStatus(): Promise<void> {
    const before = this._status.status;
    await this._status.refreshStatus();
    const now = this._status.status;
    if (
      !this._isDisposed &&
      before &&
      now &&
      (before.branch !== now.branch || before.base_branch !== now.base_branch)
    ) {
      this._source.invalidate();
      await this.refreshRuns(); // shares the read the invalidation started
    }
  }

  /**
   * Follow another notebook (or none): its pairing, parameters, last job and runs are read.
   */
  async setNotebook(path: string | null): Promise<void> {
    if (path === this._notebookPath) {
      return;
    }
    this._notebookPath = path;
    this._notebookDirty = false;
    this._generation++;
    this._pairing.setNotebook(path);
    this._form.setNotebook(path);
    this._runs.setNotebook(path);
    // The job shown stays (labelled with its notebook) until one of this notebook is found.
    this._jobs.clearErrorIfIdle();
    for (const change of ['notebook', 'pairing', 'params', 'job', 'runs'] as const) {
      this._emit(change);
    }
    if (path === null || isExecutedCopy(path)) {
      return;
    }
    const generation = this._generation;
    await Promise.all([
      this.refreshPairing(),
      this.refreshParams(),
      this.refreshRuns(),
      this._jobs.showLatest(path, () => generation === this._generation)
    ]);
  }

  setNotebookDirty(dirty: boolean): void {
    if (dirty !== this._notebookDirty) {
      this._notebookDirty = dirty;
      this._emit('dirty');
    }
  }

  refreshPairing(): Promise<void> {
    return this._pairing.refresh();
  }

  async refreshNotebook(): Promise<void> {
    await Promise.all([this.refreshPairing(), this.refreshParams()]);
  }

  pair(): Promise<void> {
    return this._pairing.pair();
  }

  sync(keep?: PairSide): Promise<void> {
    return this._pairing.sync(keep);
  }

  refreshParams(): Promise<void> {
    return this._form.refresh();
  }

  setValue(name: string, raw: string | boolean): void {
    this._form.setValue(name, raw);
  }

  resetValues(): void {
    this._form.resetValues();
  }

  checkValues(): Promise<Record<string, unknown> | null> {
    return this._form.checkValues();
  }

  /**
   * Run the notebook as a tracked experiment with the changed values, then follow the job.
   *
   * @returns the job, or `null` when nothing was started (values that do not fit,
   * a job already running, or the server refused it: see `jobError`)
   */
  async run(): Promise<IJob | null> {
    const path = this._notebookPath;
    if (path === null || this.executedCopy || !this._jobs.begin()) {
      return null;
    }
    const values = await this.checkValues();
    if (values === null || path !== this._notebookPath || this._isDisposed) {
      const checkError = this._form.checkError;
      this._jobs.abort(
        values !== null || this._isDisposed
          ? null
          : checkError
            ? this._trans.__('The values could not be checked: %1', checkError)
            : this._trans.__('Some parameters do not fit their type: see the messages above.')
      );
      return null;
    }
    return this._jobs.submit(path, values);
  }

  cancel(): Promise<void> {
    return this._jobs.cancel();
  }

  refreshRuns(): Promise<void> {
    return this._runs.refresh();
  }

  loadMoreRuns(side: 'current' | 'base'): Promise<void> {
    return this._runs.loadMore(side);
  }

  setMetric(name: string | null): void {
    this._runs.setMetric(name);
  }

  jobHtmlUrl(): string | null {
    return this._jobs.jobHtmlUrl();
  }

  mlflowUiUrl(): string | null {
    return this._status.mlflowUiUrl();
  }

  mlflowRunUrl(experimentId: string | null | undefined, runId: string | null | undefined): string | null {
    return mlflowRunUrl(this.mlflowUiUrl(), experimentId, runId);
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    for (const part of [this._runs, this._jobs, this._form, this._pairing, this._status]) {
      part.dispose();
    }
    if (this._ownSource) {
      this._source.dispose();
    }
    Signal.clearData(this);
  }

  private _emit(change: ExperimentsChange): void {
    if (!this._isDisposed) {
      this._changed.emit(change);
    }
  }

  private readonly _trans: TranslationBundle;
  private readonly _changed = new Signal<IExperimentsModel, ExperimentsChange>(this);
  private readonly _source: IRunsSource;
  private readonly _ownSource: boolean;
  private readonly _status: StatusModel;
  private readonly _pairing: PairingModel;
  private readonly _form: ParameterFormModel;
  private readonly _jobs: JobsModel;
  private readonly _runs: NotebookRunsModel;
  private _isDisposed = false;
  /** Bumped when another notebook is followed: answers for the last one are dropped. */
  private _generation = 0;
  private _notebookPath: string | null = null;
  private _notebookDirty = false;
}
