/**
 * The job shown in the panel: submitting one (`POST /cd4ml-nb/jobs`), following it with a poll
 * until it ends, cancelling it, and finding the newest job of a notebook after a reload.
 */
import { ServerConnection } from '@jupyterlab/services';
import { nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { cancelJob, getJob, jobHtmlUrl, listJobs, submitJob } from '../api';
import { samePath } from '../paths';
import { errorMessage, httpStatus } from '../request';
import { IJob, isTerminal } from '../tokens';

/** Options of {@link JobsModel}. */
export interface IJobsModelOptions {
  /** Connection to the Jupyter server (base URL, token). */
  settings: ServerConnection.ISettings;
  /** Milliseconds between two polls of a running job (default 1000). */
  pollInterval?: number;
  /** Translation of the messages the model builds (default: untranslated). */
  trans?: TranslationBundle;
}

/** The poll of a job: every interval, backing off to ten intervals while the server fails. */
function jobFrequency(interval: number): IPoll.Frequency {
  const max = Math.min(interval * 10, Poll.MAX_INTERVAL);
  return { interval: Math.min(interval, max), backoff: true, max };
}

/** The job shown, its errors, and the poll that follows it. */
export class JobsModel {
  constructor(options: IJobsModelOptions) {
    this._settings = options.settings;
    this._pollInterval = options.pollInterval ?? 1000;
    this._trans = options.trans ?? nullTranslator.load('cd4ml_nb');
  }

  /** Emitted whenever the job shown, its state or an error changes. */
  get changed(): ISignal<JobsModel, void> {
    return this._changed;
  }

  /** Emitted once when a job followed here has ended: its run is in the store now. */
  get ended(): ISignal<JobsModel, IJob> {
    return this._ended;
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

  /** `cancelling` from the moment Cancel is pressed until the job ends, then `cancelled`. */
  get cancelState(): 'cancelling' | 'cancelled' | null {
    const job = this._job;
    if (job === null || this._cancelRequested !== job.id) {
      return null;
    }
    return isTerminal(job.state) ? (job.state === 'killed' ? 'cancelled' : null) : 'cancelling';
  }

  /** Milliseconds between two polls of a running job; a change applies to the job followed now. */
  get pollInterval(): number {
    return this._pollInterval;
  }

  set pollInterval(interval: number) {
    if (interval === this._pollInterval) {
      return;
    }
    this._pollInterval = interval;
    if (this._poll) {
      this._poll.frequency = jobFrequency(interval);
      void this._poll.schedule({ interval: this._poll.frequency.interval });
    }
  }

  /** Start a submission: `false` (and nothing changed) while one is on its way or a job runs. */
  begin(): boolean {
    if (this._submitting || this.jobActive) {
      return false;
    }
    this._submitting = true;
    this._jobError = null;
    this._changed.emit();
    return true;
  }

  /** End a submission that sent nothing, saying why when `reason` is given. */
  abort(reason: string | null): void {
    this._submitting = false;
    if (reason !== null && !this._isDisposed) {
      this._jobError = reason;
      this._changed.emit();
    }
  }

  /**
   * End a submission: run the notebook with these values, then follow the job.
   *
   * @returns the job, or `null` when the server refused it (see `jobError`)
   */
  async submit(path: string, parameters: Record<string, unknown>): Promise<IJob | null> {
    this._stopPolling();
    try {
      const { id } = await submitJob(this._settings, { path, parameters });
      this._job = {
        id,
        path,
        parameters,
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
        this._changed.emit();
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
    this._changed.emit();
    try {
      const answer = await cancelJob(this._settings, job.id);
      if (this._job?.id !== job.id || this._isDisposed) {
        return;
      }
      if (!isTerminal(this._job.state)) {
        this._job = { ...this._job, state: answer.state };
        this._changed.emit();
      }
      // Read the job at once, then every interval until it has ended.
      this._startPolling(job.id);
    } catch (reason) {
      this._cancelRequested = null;
      this._jobError = this._trans.__('Cancel failed: %1', errorMessage(reason));
      this._changed.emit();
    }
  }

  /** Forget the last error unless a job is running (whose errors still matter); emits nothing. */
  clearErrorIfIdle(): void {
    if (!this.jobActive) {
      this._jobError = null;
    }
  }

  /**
   * Show the newest job of this notebook the server knows (after a reload, say), unless a job
   * runs here or `wanted` says the notebook is no longer followed once the server answered.
   */
  async showLatest(path: string, wanted: () => boolean): Promise<void> {
    if (this.jobActive) {
      return;
    }
    let jobs: IJob[];
    try {
      jobs = await listJobs(this._settings);
    } catch (reason) {
      console.debug('cd4ml-nb: could not list jobs', reason);
      return;
    }
    if (!wanted() || this.jobActive || this._isDisposed) {
      return;
    }
    const job = jobs.find(candidate => samePath(candidate.path, path)) ?? null;
    if (job === null) {
      return;
    }
    this._job = job;
    this._changed.emit();
    if (!isTerminal(job.state)) {
      this._startPolling(job.id);
    }
  }

  /** URL of the HTML render of the job shown, when it has one. */
  jobHtmlUrl(): string | null {
    return this._job?.html ? jobHtmlUrl(this._settings, this._job.id) : null;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._stopPolling();
    Signal.clearData(this);
  }

  /** Follow a job with a `Poll`: read at once, then every interval (backing off on errors) until it ends. */
  private _startPolling(id: string): void {
    this._stopPolling();
    const poll: Poll = new Poll({
      factory: (): Promise<void> => this._readJob(id, poll),
      frequency: jobFrequency(this._pollInterval),
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
      this._changed.emit();
      if (isTerminal(job.state)) {
        this._stopPolling();
        this._ended.emit(job);
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
        this._changed.emit();
        this._stopPolling();
        return;
      }
      this._jobError = this._trans.__('Lost contact with the job: %1', errorMessage(reason));
      this._lostContact = this._jobError;
      this._changed.emit();
      throw reason; // the Poll backs off
    }
  }

  private _stopPolling(): void {
    const poll = this._poll;
    this._poll = null;
    poll?.dispose();
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _trans: TranslationBundle;
  private readonly _changed = new Signal<JobsModel, void>(this);
  private readonly _ended = new Signal<JobsModel, IJob>(this);
  private _isDisposed = false;
  private _pollInterval: number;
  private _poll: Poll | null = null;
  private _cancelRequested: string | null = null;
  private _job: IJob | null = null;
  private _jobError: string | null = null;
  /** The "lost contact" message shown, cleared when the job answers again. */
  private _lostContact: string | null = null;
  private _submitting = false;
}
