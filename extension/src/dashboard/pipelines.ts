/**
 * Notebook pipelines in the Lab: the pipeline runs of this branch with their steps (status, cache
 * hit, duration), the project's pipeline file, and `pipeline run` started as a background job
 * with parameter overrides (`STEP.NAME` → value), its state polled and cancellable.
 *
 * Transport is the one of the other endpoints (`requestAPI`); a job is a job of `/cd4ml-nb/jobs`.
 */
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { cancelJob, getJob, listJobs, queryString } from '../api';
import { errorMessage, requestAPI } from '../request';
import { IJob, isTerminal } from '../tokens';

/** One step of a pipeline run. */
export interface IPipelineStep {
  step: string;
  run_id: string | null;
  /** FINISHED, FAILED, KILLED, RUNNING, SKIPPED (its needs did not finish), PENDING, NOT RUN. */
  status: string;
  /** The run a cache hit stands for (no kernel started), `null` when the step was executed. */
  cache_hit: string | null;
  /** Duration in seconds (so far, when running). */
  seconds: number | null;
  /** Epoch seconds. */
  start_time: number | null;
  notebook: string | null;
  error: string | null;
  metrics: Record<string, number>;
}

/** A pipeline run (`cd4ml.kind=pipeline`) and its steps in pipeline order. */
export interface IPipelineRun {
  run_id: string;
  experiment: string;
  status: string;
  file: string | null;
  branch: string | null;
  commit: string | null;
  start_time: number | null;
  seconds: number | null;
  reason: string | null;
  counts: Partial<Record<'executed' | 'cache_hits' | 'failed' | 'skipped', number>>;
  steps: IPipelineStep[];
}

/** The pipeline file, as `GET /cd4ml-nb/pipelines/file` describes it. */
export interface IPipelineFile {
  file: string;
  steps: {
    name: string;
    notebook: string | null;
    needs: string[];
    /** Every parameter the notebook declares, with its value in the pipeline (else its default). */
    parameters: Record<string, unknown>;
    /** Their declared types. */
    types?: Record<string, string>;
    outputs: string[];
  }[];
}

/** What `POST /cd4ml-nb/pipelines/jobs` takes. */
export interface IPipelineRequest {
  /** `STEP.NAME` → the value's text, as after `-p STEP.NAME VALUE`. */
  overrides?: Record<string, string>;
  steps?: string[];
  force?: boolean;
}

/** `GET /cd4ml-nb/pipelines`: the branch's newest pipeline runs with their steps. */
export async function listPipelines(
  settings: ServerConnection.ISettings,
  branch?: string | null
): Promise<IPipelineRun[]> {
  const data = await requestAPI<{ pipelines: IPipelineRun[] }>(`pipelines${queryString({ branch })}`, settings, {
    method: 'GET'
  });
  return data.pipelines;
}

/** `GET /cd4ml-nb/pipelines/file`: the project's pipeline file, its steps and parameters. */
export function describePipeline(settings: ServerConnection.ISettings): Promise<IPipelineFile> {
  return requestAPI<IPipelineFile>('pipelines/file', settings, { method: 'GET' });
}

/**
 * `POST /cd4ml-nb/pipelines/jobs`: start `pipeline run` as a background job.
 *
 * @throws {Cd4mlRequestError} 400 naming the step and the parameter of a bad override
 */
export function startPipeline(settings: ServerConnection.ISettings, request: IPipelineRequest): Promise<{ id: string }> {
  return requestAPI<{ id: string }>('pipelines/jobs', settings, { method: 'POST', body: JSON.stringify(request) });
}

/** The `STEP.NAME` choices of a pipeline file, with their current values. */
export function overrideChoices(file: IPipelineFile | null): { target: string; value: string }[] {
  const found: { target: string; value: string }[] = [];
  for (const step of file?.steps ?? []) {
    for (const [name, value] of Object.entries(step.parameters ?? {})) {
      found.push({ target: `${step.name}.${name}`, value: typeof value === 'string' ? value : JSON.stringify(value) });
    }
  }
  return found;
}

/** A duration for a table cell: `0.8 s`, `12 s`, `3 min 05 s`. */
export function formatSeconds(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) {
    return '';
  }
  if (seconds < 10) {
    return `${seconds.toFixed(1)} s`;
  }
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, '0')} s`;
}

const POLL_MS = 1000;

/** State of the Pipelines view; views listen to `changed`. */
export class PipelinesModel {
  constructor(readonly settings: ServerConnection.ISettings) {}

  get changed(): ISignal<PipelinesModel, void> {
    return this._changed;
  }
  get pipelines(): ReadonlyArray<IPipelineRun> {
    return this._pipelines;
  }
  get file(): IPipelineFile | null {
    return this._file;
  }
  get fileError(): string | null {
    return this._fileError;
  }
  get error(): string | null {
    return this._error;
  }
  get loading(): boolean {
    return this._loading;
  }
  get job(): IJob | null {
    return this._job;
  }
  get jobError(): string | null {
    return this._jobError;
  }
  get starting(): boolean {
    return this._starting;
  }
  get cancelling(): boolean {
    return this._cancelling;
  }
  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Read the pipeline runs and the pipeline file again. */
  async refresh(): Promise<void> {
    if (this._disposed) {
      return;
    }
    this._loading = true;
    this._emit();
    const [runs, file] = await Promise.all([
      listPipelines(this.settings).then(
        value => ({ value, error: null }),
        (error: unknown) => ({ value: null, error: errorMessage(error) })
      ),
      describePipeline(this.settings).then(
        value => ({ value, error: null }),
        (error: unknown) => ({ value: null, error: errorMessage(error) })
      )
    ]);
    if (this._disposed) {
      return;
    }
    if (runs.value) {
      this._pipelines = runs.value;
    }
    this._error = runs.error;
    this._file = file.value;
    this._fileError = file.error;
    this._loading = false;
    this._emit();
  }

  /** Show the newest pipeline job the server knows (after a reload, say), and follow it while it runs. */
  async showLatest(): Promise<void> {
    if (this._job !== null || this._disposed) {
      return;
    }
    let jobs: IJob[];
    try {
      jobs = await listJobs(this.settings);
    } catch (reason) {
      console.debug('cd4ml-nb: could not list jobs', reason);
      return;
    }
    const latest = jobs.find(j => (j as IJob & { kind?: string }).kind === 'pipeline') ?? null;
    if (latest === null || this._job !== null || this._disposed) {
      return;
    }
    this._job = latest;
    this._emit();
    if (!isTerminal(latest.state)) {
      this._follow(latest.id);
    }
  }

  /** Start `pipeline run` with these overrides; a refused request leaves the reason in `jobError`. */
  async start(request: IPipelineRequest): Promise<IJob | null> {
    if (this._starting || (this._job && !isTerminal(this._job.state))) {
      return null;
    }
    this._starting = true;
    this._jobError = null;
    this._emit();
    try {
      const { id } = await startPipeline(this.settings, request);
      this._job = await getJob(this.settings, id);
      this._follow(id);
      return this._job;
    } catch (error) {
      this._jobError = errorMessage(error);
      return null;
    } finally {
      this._starting = false;
      this._emit();
    }
  }

  /** Cancel the running pipeline job: its step's kernel stops, its runs end KILLED. */
  async cancel(): Promise<void> {
    const job = this._job;
    if (!job || isTerminal(job.state) || this._cancelling) {
      return;
    }
    this._cancelling = true;
    this._emit();
    try {
      await cancelJob(this.settings, job.id);
    } catch (error) {
      this._jobError = errorMessage(error);
      this._cancelling = false;
    }
    this._emit();
  }

  dispose(): void {
    this._disposed = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    Signal.clearData(this);
  }

  /** Poll the job until it ends, reading the pipeline runs each time (the steps as they end). */
  private _follow(id: string): void {
    const tick = async (): Promise<void> => {
      this._timer = null;
      if (this._disposed) {
        return;
      }
      try {
        this._job = await getJob(this.settings, id);
      } catch (error) {
        this._jobError = errorMessage(error);
      }
      await this.refresh();
      if (this._job && isTerminal(this._job.state)) {
        this._cancelling = false;
        this._emit();
        return;
      }
      if (!this._disposed) {
        this._timer = setTimeout(() => void tick(), POLL_MS);
      }
    };
    this._timer = setTimeout(() => void tick(), POLL_MS);
  }

  private _emit(): void {
    if (!this._disposed) {
      this._changed.emit();
    }
  }

  private _changed = new Signal<PipelinesModel, void>(this);
  private _pipelines: IPipelineRun[] = [];
  private _file: IPipelineFile | null = null;
  private _fileError: string | null = null;
  private _error: string | null = null;
  private _loading = false;
  private _job: IJob | null = null;
  private _jobError: string | null = null;
  private _starting = false;
  private _cancelling = false;
  private _disposed = false;
  private _timer: ReturnType<typeof setTimeout> | null = null;
}
