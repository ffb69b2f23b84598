/**
 * State of the Experiments panel: the branch, the active notebook's pairing and
 * parameter form, the job being run and the runs of this branch against the base branch.
 *
 * Views listen to `changed` and read the state; they never call the REST API themselves.
 */
import { ServerConnection } from '@jupyterlab/services';
import { nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  cancelJob,
  checkParams,
  getJob,
  getPairing,
  getParams,
  getRuns,
  getStatus,
  jobHtmlUrl,
  listJobs,
  pairNotebook,
  submitJob,
  syncPair
} from './api';
import { fieldText, formFields, jsonEqual } from './parameters';
import { Cd4mlRequestError } from './request';
import { mergeRuns, metricNames, mlflowRunUrl, mlflowUiBase } from './runs';
import {
  ExperimentsChange,
  IBranchRun,
  IExperimentsModel,
  IFieldState,
  IFormField,
  IJob,
  IPairing,
  IParamsContract,
  PairSide,
  IRunsSection,
  IStatus,
  isTerminal
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
}

/** The message of an error, for display. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    return error.message || error.name;
  }
  return String(error);
}

function httpStatus(error: unknown): number | null {
  return error instanceof Cd4mlRequestError ? error.status : null;
}

/** Folder (at any depth) the server writes executed notebooks to. */
export const EXECUTED_FOLDER = 'cd4ml-runs';

/** Whether a path is an executed copy written by a run (not a notebook to run or pair). */
export function isExecutedCopy(path: string | null | undefined): boolean {
  return !!path && new RegExp(`(^|/)${EXECUTED_FOLDER}/`).test(path.replace(/^\.?\//, ''));
}

/** Paths compare equal whatever their leading `./` or `/`. */
export function samePath(a: string | null | undefined, b: string | null | undefined): boolean {
  const norm = (p: string) => p.replace(/^(\.\/|\/)+/, '');
  return !!a && !!b && norm(a) === norm(b);
}

/** Short state of a pairing for labels: `paired ✓`, `out of sync`, … */
export function describePairing(
  pairing: IPairing | null,
  trans: TranslationBundle = nullTranslator.load('cd4ml_nb')
): string {
  if (!pairing) {
    return '';
  }
  if (!pairing.paired) {
    return trans.__('not paired');
  }
  if (pairing.conflict) {
    return trans.__('conflict');
  }
  if (pairing.missing) {
    return pairing.missing === 'text' ? trans.__('paired, .py missing') : trans.__('paired, .ipynb missing');
  }
  if (pairing.in_sync === false) {
    return trans.__('out of sync');
  }
  return trans.__('paired ✓');
}

/**
 * The experiments model: one per JupyterLab, shared by the panel, the status bar
 * and the commands.
 */
export class ExperimentsModel implements IExperimentsModel {
  constructor(options: IExperimentsModelOptions) {
    this._settings = options.settings;
    this._pollInterval = options.pollInterval ?? 1000;
    this._checkDelay = options.checkDelay ?? 150;
    this._pageSize = options.pageSize ?? 50;
    this._trans = options.trans ?? nullTranslator.load('cd4ml_nb');
  }

  get changed(): ISignal<IExperimentsModel, ExperimentsChange> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  get status(): IStatus | null {
    return this._status;
  }

  get statusError(): string | null {
    return this._statusError;
  }

  get notebookPath(): string | null {
    return this._notebookPath;
  }

  get notebookDirty(): boolean {
    return this._notebookDirty;
  }

  get pairing(): IPairing | null {
    return this._pairing;
  }

  get pairingError(): string | null {
    return this._pairingError;
  }

  get pairingDiff(): string | null {
    return this._pairingDiff;
  }

  get pairingBusy(): boolean {
    return this._pairingBusy;
  }

  get syncDone(): string | null {
    return this._syncDone;
  }

  get contract(): IParamsContract | null {
    return this._contract;
  }

  get contractError(): string | null {
    return this._contractError;
  }

  get fields(): ReadonlyArray<IFieldState> {
    return this._fields;
  }

  get job(): IJob | null {
    return this._job;
  }

  get jobError(): string | null {
    return this._jobError;
  }

  get submitting(): boolean {
    return this._submitting;
  }

  get jobActive(): boolean {
    return this._job !== null && !isTerminal(this._job.state);
  }

  get runs(): ReadonlyArray<IRunsSection> {
    return this._runs;
  }

  get runsLoading(): boolean {
    return this._runsLoading;
  }

  get allRuns(): ReadonlyArray<IBranchRun> {
    if (this._allRuns === null) {
      this._allRuns = mergeRuns(this._runs);
    }
    return this._allRuns;
  }

  get metricNames(): ReadonlyArray<string> {
    return metricNames(this.allRuns);
  }

  get metric(): string | null {
    return this._metric;
  }

  /** Whether the notebook followed is an executed copy (no form, no pairing, no run). */
  get executedCopy(): boolean {
    return isExecutedCopy(this._notebookPath);
  }

  /** Why Run is disabled now, `null` when it is not. */
  get runBlocked(): string | null {
    const invalid = this._fields.find(field => field.error !== null);
    if (invalid) {
      return this._trans.__('%1: %2', invalid.parameter.name, invalid.error);
    }
    if (this._checkError !== null) {
      return this._trans.__('The values could not be checked: %1', this._checkError);
    }
    if (this.executedCopy) {
      return this._trans.__('This is an executed copy of a run: open the source notebook to run it.');
    }
    return null;
  }

  /** `cancelling` from the moment Cancel is pressed until the job ends, then `cancelled`. */
  get cancelState(): 'cancelling' | 'cancelled' | null {
    const job = this._job;
    if (job === null || this._cancelRequested !== job.id) {
      return null;
    }
    return isTerminal(job.state) ? (job.state === 'killed' ? 'cancelled' : null) : 'cancelling';
  }

  /** Read `GET /cd4ml-nb/status`; the runs are re-read when the branch changed. */
  async refreshStatus(): Promise<void> {
    const before = this._status;
    try {
      this._status = await getStatus(this._settings);
      this._statusError = null;
    } catch (error) {
      this._statusError = errorMessage(error);
    }
    if (this._isDisposed) {
      return;
    }
    this._emit('status');
    const now = this._status;
    if (
      before &&
      now &&
      (before.branch !== now.branch || before.base_branch !== now.base_branch)
    ) {
      await this.refreshRuns();
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
    this._pairing = null;
    this._pairingError = null;
    this._pairingDiff = null;
    this._syncDone = null;
    this._contract = null;
    this._contractError = null;
    this._fields = [];
    this._checkSeq++;
    this._checkError = null;
    this._runs = [];
    this._allRuns = null;
    // The job shown stays (labelled with its notebook) until one of this notebook is found.
    if (!this.jobActive) {
      this._jobError = null;
    }
    this._emit('notebook');
    this._emit('pairing');
    this._emit('params');
    this._emit('job');
    this._emit('runs');
    if (path === null || isExecutedCopy(path)) {
      return;
    }
    await Promise.all([
      this.refreshPairing(),
      this.refreshParams(),
      this.refreshRuns(),
      this._findJob(path)
    ]);
  }

  setNotebookDirty(dirty: boolean): void {
    if (dirty !== this._notebookDirty) {
      this._notebookDirty = dirty;
      this._emit('dirty');
    }
  }

  async refreshPairing(): Promise<void> {
    const path = this._notebookPath;
    if (path === null) {
      return;
    }
    const generation = this._generation;
    let pairing: IPairing | null = null;
    let error: string | null = null;
    try {
      pairing = await getPairing(this._settings, path);
    } catch (reason) {
      error = errorMessage(reason);
    }
    if (generation !== this._generation || this._isDisposed) {
      return;
    }
    this._pairing = pairing;
    this._pairingError = error;
    this._emit('pairing');
  }

  async refreshNotebook(): Promise<void> {
    await Promise.all([this.refreshPairing(), this.refreshParams()]);
  }

  async sync(keep?: PairSide): Promise<void> {
    let synced = false;
    await this._pairingRequest(
      path => syncPair(this._settings, path, keep),
      ({ done, ...pairing }) => {
        this._pairing = pairing;
        this._syncDone = done;
        synced = done !== 'in sync';
      },
      () => {
        this._syncDone = null;
      }
    );
    if (synced && !this._isDisposed) {
      this._emit('synced');
      void this.refreshParams();
    }
  }

  /** `POST /cd4ml-nb/pairing` for the notebook; a refusal keeps the server's message and diff. */
  async pair(): Promise<void> {
    await this._pairingRequest(
      path => pairNotebook(this._settings, path),
      pairing => {
        this._pairing = pairing;
      }
    );
  }

  /**
   * One pairing request for the open notebook at a time: its answer is applied only if the
   * notebook did not change meanwhile, and a refusal keeps the server's message and diff.
   * `start` clears the caller's own state when the request goes out.
   */
  private async _pairingRequest<T>(
    request: (path: string) => Promise<T>,
    apply: (answer: T) => void,
    start: () => void = () => undefined
  ): Promise<void> {
    const path = this._notebookPath;
    if (path === null || this._pairingBusy) {
      return;
    }
    const generation = this._generation;
    this._pairingBusy = true;
    this._pairingError = null;
    this._pairingDiff = null;
    start();
    this._emit('pairing');
    try {
      const answer = await request(path);
      if (generation === this._generation) {
        apply(answer);
      }
    } catch (reason) {
      if (generation === this._generation) {
        this._pairingRefused(reason);
      }
    } finally {
      this._pairingBusy = false;
      if (!this._isDisposed) {
        this._emit('pairing');
      }
    }
  }

  /** Keep a pairing refusal's message and, when the server sent one, its diff. */
  private _pairingRefused(reason: unknown): void {
    this._pairingError = errorMessage(reason);
    const body = reason instanceof Cd4mlRequestError ? reason.body : null;
    const diff = (body as { diff?: unknown } | null)?.diff;
    this._pairingDiff = typeof diff === 'string' && diff ? diff : null;
  }

  /**
   * Read the parameter contract. Values the user changed are kept for parameters
   * that still exist with the same type.
   */
  async refreshParams(): Promise<void> {
    const path = this._notebookPath;
    if (path === null) {
      return;
    }
    const generation = this._generation;
    let contract: IParamsContract | null = null;
    let error: string | null = null;
    try {
      contract = await getParams(this._settings, path);
    } catch (reason) {
      error = errorMessage(reason);
    }
    if (generation !== this._generation || this._isDisposed) {
      return;
    }
    const previous = new Map(this._fields.map(field => [field.parameter.name, field]));
    if (contract !== null && !contract.schema) {
      error = this._trans.__('the server sent no parameter schema: update cd4ml_nb on the server');
      contract = null;
    }
    this._contract = contract;
    this._contractError = error;
    this._checkError = null;
    this._fields = (contract?.schema ? formFields(contract.schema) : []).map(parameter => {
      const old = previous.get(parameter.name);
      const kept = old && old.changed && old.parameter.type === parameter.type;
      return this._field(parameter, kept ? old.raw : parameter.defaultRaw, kept ? old.error : null);
    });
    this._emit('params');
    if (this._fields.some(field => field.changed)) {
      this._scheduleCheck();
    }
  }

  /** Set what a form input holds; it is checked at once. */
  setValue(name: string, raw: string | boolean): void {
    const index = this._fields.findIndex(field => field.parameter.name === name);
    if (index < 0) {
      return;
    }
    const fields = [...this._fields];
    fields[index] = this._field(fields[index].parameter, raw, fields[index].error);
    this._fields = fields;
    this._emit('form');
    this._scheduleCheck();
  }

  /** Put every input back to the notebook's default. */
  resetValues(): void {
    this._checkSeq++; // a check on its way is for values no longer there
    this._checkError = null;
    this._fields = this._fields.map(field => this._field(field.parameter, field.parameter.defaultRaw));
    this._emit('params');
  }

  async checkValues(): Promise<Record<string, unknown> | null> {
    for (;;) {
      const seq = ++this._checkSeq;
      const checked = await this._check(seq);
      if (checked.current || this._isDisposed) {
        return checked.values;
      }
    }
  }

  /** Check the form a moment after the last change (one request per pause in typing). */
  private _scheduleCheck(): void {
    const seq = ++this._checkSeq;
    if (this._checkTimer !== null) {
      clearTimeout(this._checkTimer);
    }
    this._checkTimer = setTimeout(() => {
      this._checkTimer = null;
      if (seq === this._checkSeq && !this._isDisposed) {
        void this._check(seq);
      }
    }, this._checkDelay);
  }

  /**
   * `POST /cd4ml-nb/params/check` with the texts of the changed fields; the answer is applied
   * when no newer check was started meanwhile (`current`).
   */
  private async _check(seq: number): Promise<{ current: boolean; values: Record<string, unknown> | null }> {
    const path = this._notebookPath;
    const generation = this._generation;
    const changed = this._fields.filter(field => field.changed);
    let values: Record<string, unknown> = {};
    let errors: Record<string, string> = {};
    let failure: string | null = null;
    if (path !== null && changed.length > 0) {
      const texts = Object.fromEntries(changed.map(field => [field.parameter.name, fieldText(field.raw)]));
      try {
        ({ values, errors } = await checkParams(this._settings, path, texts));
      } catch (reason) {
        failure = errorMessage(reason);
      }
    }
    if (seq !== this._checkSeq || generation !== this._generation || this._isDisposed) {
      return { current: false, values: null };
    }
    this._checkError = failure;
    this._fields = this._fields.map(field => ({
      ...field,
      error: field.changed ? errors[field.parameter.name] ?? null : null
    }));
    this._emit('form');
    if (failure !== null || Object.keys(errors).length > 0) {
      return { current: true, values: null };
    }
    const sent: Record<string, unknown> = {};
    for (const field of changed) {
      const name = field.parameter.name;
      const isDefault = field.parameter.expression === null && jsonEqual(values[name], field.parameter.default);
      if (Object.prototype.hasOwnProperty.call(values, name) && !isDefault) {
        sent[name] = values[name];
      }
    }
    return { current: true, values: sent };
  }

  /**
   * Run the notebook as a tracked experiment with the changed values, then follow the job.
   *
   * @returns the job, or `null` when nothing was started (values that do not fit,
   * a job already running, or the server refused it: see `jobError`)
   */
  async run(): Promise<IJob | null> {
    const path = this._notebookPath;
    if (path === null || this._submitting || this.jobActive || this.executedCopy) {
      return null;
    }
    this._submitting = true;
    this._jobError = null;
    this._emit('job');
    const values = await this.checkValues();
    if (values === null || path !== this._notebookPath || this._isDisposed) {
      this._submitting = false;
      if (values === null && !this._isDisposed) {
        this._jobError = this._checkError
          ? this._trans.__('The values could not be checked: %1', this._checkError)
          : this._trans.__('Some parameters do not fit their type: see the messages above.');
        this._emit('job');
      }
      return null;
    }
    this._stopPolling();
    try {
      const { id } = await submitJob(this._settings, { path, parameters: values });
      this._job = {
        id,
        path,
        parameters: values,
        state: 'queued',
        progress: { done: 0, total: 0 },
        run_id: null,
        experiment: null,
        error: null,
        executed: null,
        html: null,
        created: Date.now() / 1000,
        metrics: {}
      };
      this._startPolling(id);
      return this._job;
    } catch (reason) {
      this._jobError = errorMessage(reason);
      return null;
    } finally {
      this._submitting = false;
      if (!this._isDisposed) {
        this._emit('job');
      }
    }
  }

  /** `DELETE /cd4ml-nb/jobs/ID` for the job shown; polling goes on until it has ended. */
  async cancel(): Promise<void> {
    const job = this._job;
    if (job === null || isTerminal(job.state)) {
      return;
    }
    this._cancelRequested = job.id; // "cancelling…" at once, before the server answers
    this._emit('job');
    try {
      const answer = await cancelJob(this._settings, job.id);
      if (this._job?.id !== job.id || this._isDisposed) {
        return;
      }
      if (!isTerminal(this._job.state)) {
        this._job = { ...this._job, state: answer.state };
        this._emit('job');
      }
      // Read the job at once, then every interval until it has ended.
      this._startPolling(job.id);
    } catch (reason) {
      this._cancelRequested = null;
      this._jobError = this._trans.__('Cancel failed: %1', errorMessage(reason));
      this._emit('job');
    }
  }

  /** Read the runs of this notebook on the current branch and on the base branch. */
  async refreshRuns(): Promise<void> {
    const path = this._notebookPath;
    if (path === null) {
      return;
    }
    if (this._status === null) {
      await this.refreshStatus();
    }
    const generation = ++this._runsGeneration;
    const status = this._status;
    const current = status?.branch ?? null;
    const base = status?.base_branch || null;
    this._runsLoading = true;
    this._emit('runs');
    const loads = [this._loadSection('current', current, path, undefined)];
    if (base && base !== current) {
      loads.push(this._loadSection('base', base, path, base));
    }
    const sections = await Promise.all(loads);
    if (
      generation !== this._runsGeneration ||
      path !== this._notebookPath ||
      this._isDisposed
    ) {
      return;
    }
    this._runs = sections;
    this._runsLoading = false;
    this._allRuns = null;
    this._pickMetric();
    this._emit('runs');
  }

  /** Read the next page of one branch's runs. */
  async loadMoreRuns(side: 'current' | 'base'): Promise<void> {
    const path = this._notebookPath;
    const section = this._runs.find(s => s.side === side);
    if (path === null || !section || !section.nextPageToken) {
      return;
    }
    const generation = this._runsGeneration;
    const more = await this._loadSection(
      side,
      section.branch,
      path,
      side === 'base' ? section.branch ?? undefined : undefined,
      section.nextPageToken
    );
    if (generation !== this._runsGeneration || this._isDisposed) {
      return;
    }
    this._runs = this._runs.map(s =>
      s.side === side
        ? {
            ...s,
            runs: [...s.runs, ...more.runs],
            nextPageToken: more.error ? s.nextPageToken : more.nextPageToken,
            error: more.error
          }
        : s
    );
    this._allRuns = null;
    this._pickMetric();
    this._emit('runs');
  }

  setMetric(name: string | null): void {
    if (name === this._metric) {
      return;
    }
    this._metric = name;
    this._emit('metric');
  }

  jobHtmlUrl(): string | null {
    return this._job?.html ? jobHtmlUrl(this._settings, this._job.id) : null;
  }

  mlflowUiUrl(): string | null {
    return mlflowUiBase(this._status, this._settings.baseUrl);
  }

  mlflowRunUrl(experimentId: string | null | undefined, runId: string | null | undefined): string | null {
    return mlflowRunUrl(this.mlflowUiUrl(), experimentId, runId);
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._stopPolling();
    if (this._checkTimer !== null) {
      clearTimeout(this._checkTimer);
    }
    Signal.clearData(this);
  }

  /** A field holding `raw`: changed when it differs from the default's text; `error` kept until checked. */
  private _field(parameter: IFormField, raw: string | boolean, error: string | null = null): IFieldState {
    const changed = raw !== parameter.defaultRaw;
    return { parameter, raw, error: changed ? error : null, changed };
  }

  private async _loadSection(
    side: 'current' | 'base',
    branch: string | null,
    notebook: string,
    queryBranch: string | undefined,
    pageToken?: string
  ): Promise<IRunsSection> {
    try {
      const page = await getRuns(this._settings, {
        branch: queryBranch,
        notebook,
        page_token: pageToken,
        max_results: this._pageSize
      });
      return {
        branch,
        side,
        runs: page.runs ?? [],
        nextPageToken: page.next_page_token ?? null,
        error: null
      };
    } catch (reason) {
      // A branch without an experiment yet has no runs: not an error to show.
      const error = httpStatus(reason) === 404 ? null : errorMessage(reason);
      return { branch, side, runs: [], nextPageToken: null, error };
    }
  }

  private _pickMetric(): void {
    const names = this.metricNames;
    if (this._metric !== null && names.includes(this._metric)) {
      return;
    }
    const fromJob = Object.keys(this._job?.metrics ?? {}).find(name => names.includes(name));
    const next = fromJob ?? names[0] ?? null;
    if (next !== this._metric) {
      this._metric = next;
      this._emit('metric');
    }
  }

  /** Show the newest job of this notebook the server knows (after a reload, say). */
  private async _findJob(path: string): Promise<void> {
    if (this.jobActive) {
      return;
    }
    const generation = this._generation;
    let jobs: IJob[];
    try {
      jobs = await listJobs(this._settings);
    } catch (reason) {
      console.debug('cd4ml-nb: could not list jobs', reason);
      return;
    }
    if (generation !== this._generation || this.jobActive || this._isDisposed) {
      return;
    }
    const job = jobs.find(candidate => samePath(candidate.path, path)) ?? null;
    if (job === null) {
      return;
    }
    this._job = job;
    this._emit('job');
    if (!isTerminal(job.state)) {
      this._startPolling(job.id);
    }
  }

  /** Follow a job with a `Poll`: read at once, then every interval (backing off on errors) until it ends. */
  private _startPolling(id: string): void {
    this._stopPolling();
    const poll: Poll = new Poll({
      factory: (): Promise<void> => this._readJob(id, poll),
      frequency: { interval: this._pollInterval, backoff: true, max: this._pollInterval * 10 },
      name: `cd4ml-nb:job:${id}`,
      standby: 'never'
    });
    this._poll = poll;
    void poll.refresh();
  }

  private async _readJob(id: string, poll: Poll): Promise<void> {
    if (poll !== this._poll || this._isDisposed) {
      return;
    }
    try {
      const job = await getJob(this._settings, id);
      if (poll !== this._poll || this._isDisposed) {
        return;
      }
      this._job = job;
      if (this._lostContact !== null && this._jobError === this._lostContact) {
        this._jobError = null;
      }
      this._lostContact = null;
      this._emit('job');
      if (isTerminal(job.state)) {
        this._stopPolling();
        void this.refreshRuns();
      }
    } catch (reason) {
      if (poll !== this._poll || this._isDisposed) {
        return;
      }
      if (httpStatus(reason) === 404) {
        this._jobError = this._trans.__('The server no longer knows job %1.', id);
        if (this._job?.id === id && !isTerminal(this._job.state)) {
          this._job = null;
        }
        this._emit('job');
        this._stopPolling();
        return;
      }
      this._jobError = this._trans.__('Lost contact with the job: %1', errorMessage(reason));
      this._lostContact = this._jobError;
      this._emit('job');
      throw reason; // the Poll backs off
    }
  }

  private _stopPolling(): void {
    const poll = this._poll;
    this._poll = null;
    poll?.dispose();
  }

  private _emit(change: ExperimentsChange): void {
    this._changed.emit(change);
  }

  private _settings: ServerConnection.ISettings;
  private _pollInterval: number;
  private _checkDelay: number;
  private _checkSeq = 0;
  private _checkTimer: ReturnType<typeof setTimeout> | null = null;
  private _checkError: string | null = null;
  private _pageSize: number;
  private _changed = new Signal<IExperimentsModel, ExperimentsChange>(this);
  private _isDisposed = false;
  private _generation = 0;
  private _runsGeneration = 0;
  private _poll: Poll | null = null;
  private _cancelRequested: string | null = null;

  private _status: IStatus | null = null;
  private _statusError: string | null = null;
  private _notebookPath: string | null = null;
  private _notebookDirty = false;
  private _pairing: IPairing | null = null;
  private _pairingError: string | null = null;
  private _pairingDiff: string | null = null;
  private _syncDone: string | null = null;
  private _pairingBusy = false;
  private _contract: IParamsContract | null = null;
  private _contractError: string | null = null;
  private _fields: IFieldState[] = [];
  private _job: IJob | null = null;
  private _jobError: string | null = null;
  /** The "lost contact" message shown, cleared when the job answers again. */
  private _lostContact: string | null = null;
  private _trans: TranslationBundle;
  private _submitting = false;
  private _runs: IRunsSection[] = [];
  private _runsLoading = false;
  private _allRuns: IBranchRun[] | null = null;
  private _metric: string | null = null;
}
