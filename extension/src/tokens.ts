/**
 * Contracts shared by the frontend and the cd4ml_nb server extension.
 *
 * The payload interfaces mirror the JSON returned under `/cd4ml-nb/…`;
 * keep them in step with `cd4ml_nb/routes.py`. Every string in them comes
 * from the server (paths, branch names, parameter values, errors) and is
 * untrusted: views render it as text only.
 */
import { Token } from '@lumino/coreutils';
import { IDisposable } from '@lumino/disposable';
import { ISignal } from '@lumino/signaling';

/** URL namespace of every cd4ml_nb REST endpoint. */
export const API_NAMESPACE = 'cd4ml-nb';

/** Payload of `GET /cd4ml-nb/status`. */
export interface IStatus {
  /** Version of the cd4ml_nb Python package serving the API. */
  version: string;
  /** Current git branch, or `null` when the server root is not in a git work tree. */
  branch: string | null;
  /** Branch that experiments are compared against (e.g. `main`). */
  base_branch: string;
  /** MLflow tracking URI runs are written to. */
  tracking_uri: string;
  /** URL of an MLflow UI for this store, when one is configured (or the tracking server's). */
  mlflow_ui_url: string | null;
  /**
   * Path, under the Jupyter server's base URL, of the MLflow UI the server starts on demand and
   * proxies for a SQLite store (`cd4ml-nb/mlflow/`); `null` for a tracking server.
   */
  mlflow_ui_proxy: string | null;
}

/** Side of a notebook pair. */
export type PairSide = 'ipynb' | 'text';

/** Payload of `GET /cd4ml-nb/pairing?path=P` and `POST /cd4ml-nb/pairing`. */
export interface IPairing {
  /** The path asked about (server-root relative). */
  path: string;
  /** Whether the notebook is paired (by its metadata or a `jupytext.toml`). */
  paired: boolean;
  /** Path of the `.ipynb` side, when known. */
  ipynb: string | null;
  /** Path of the text (`.py`) side, when known. */
  text: string | null;
  /** Jupytext formats, e.g. `ipynb,py:percent`. */
  formats: string | null;
  /** Whether both sides have the same inputs; `null` when one side is missing. */
  in_sync: boolean | null;
  /** The side that looks newer when out of sync. */
  newer: PairSide | null;
  /** Both sides changed since the last sync. */
  conflict: boolean;
  /** The side that does not exist yet. */
  missing: PairSide | null;
  /** What "changed" was decided against (sync record, git HEAD, mtime). */
  basis: string | null;
  /** Unified diff of the inputs (`.ipynb` as text → text side) when out of sync, else `null`. */
  diff?: string | null;
}

/** Payload of `POST /cd4ml-nb/pairing/sync`: the pairing state after the sync, and what was done. */
export interface ISyncResult extends IPairing {
  done: string;
}

/** Types a notebook parameter can declare (see `cd4ml_nb/params.py`). */
export type ParameterType =
  | 'int'
  | 'float'
  | 'str'
  | 'bool'
  | 'list'
  | 'dict'
  | 'list[int]'
  | 'list[float]'
  | 'list[str]'
  | 'list[bool]'
  | 'any';

/** One declared parameter of a notebook's `parameters` cell. */
export interface IParameter {
  name: string;
  /** Declared or inferred type; unknown strings are treated like `any`. */
  type: ParameterType | string;
  /** Literal default (JSON); the source text when `expression` is set. */
  default: unknown;
  /** Help from the line's comment. */
  help: string;
  /** Whether `None` is allowed. */
  nullable: boolean;
  /** Source of a default that is not a literal (e.g. `np.arange(3)`). */
  expression: string | null;
}

/** A JSON Schema (draft 2020-12) of one parameter, as `cd4ml_nb.params.json_schema` writes it. */
export interface IParameterSchema {
  type?: string;
  anyOf?: IParameterSchema[];
  items?: IParameterSchema;
  title?: string;
  description?: string;
  default?: unknown;
  'x-cd4ml-type'?: string;
  'x-cd4ml-nullable'?: boolean;
  'x-cd4ml-expression'?: string;
}

/** The parameter contract as JSON Schema: one property per parameter. */
export interface IContractSchema {
  type: 'object';
  properties: Record<string, IParameterSchema>;
  additionalProperties: boolean;
  'x-cd4ml-order': string[];
}

/** Payload of `GET /cd4ml-nb/params?path=P`. */
export interface IParamsContract {
  /** Index of the cell tagged `parameters`; `null` when there is none. */
  cell_index: number | null;
  parameters: IParameter[];
  /** The same contract as JSON Schema: what the form is rendered from. */
  schema?: IContractSchema;
}

/** Payload of `POST /cd4ml-nb/params/check`. */
export interface IParamsCheck {
  /** Typed values of the texts that fit. */
  values: Record<string, unknown>;
  /** Why each text that does not fit is refused. */
  errors: Record<string, string>;
}

/** Body of `POST /cd4ml-nb/compare`. */
export interface ICompareRequest {
  /** Two or more run ids; the first is the reference. */
  run_ids: string[];
  /** Metric the gate checks (default: the first logged). */
  metric?: string;
  /** Regression the gate allows: `0.05` or `2%`. */
  max_regression?: string;
}

/** One run of a comparison, with links to what it left. */
export interface IComparedRun extends IRun {
  branch: string | null;
  /** Executed notebook, server-root relative (openable in Lab). */
  executed: string | null;
  /** HTML render, server-root relative. */
  html: string | null;
}

/** A metric of one run against the reference run. */
export interface IMetricDelta {
  run_id: string;
  metric: string;
  goal: 'minimize' | 'maximize' | string;
  base: number | null;
  branch: number | null;
  delta: number | null;
  relative: number | null;
}

/** One data set of `cd4ml-nb diff`. */
export interface IDatasetDiff {
  name: string;
  only_in?: string | null;
  schema_changed?: boolean;
  sampling_changed?: boolean;
  [key: string]: unknown;
}

/** `cd4ml-nb diff REF RUN --json`. */
export interface IRunDiff {
  run_a: string;
  run_b: string;
  commits: [string | null, string | null];
  notebooks: [string | null, string | null];
  source_diff: string;
  params_changed: Record<string, [string | null, string | null]>;
  datasets: IDatasetDiff[];
  axes: Record<string, boolean>;
  metrics: Record<string, [number | null, number | null]>;
}

/** `cd4ml-nb gate` of a branch against the base, for one metric. */
export interface IGateVerdict {
  branch: string | null;
  base: string;
  metric: string;
  max_regression: string;
  /** `null` when the gate could not evaluate (see `message`). */
  passed: boolean | null;
  checks: string[];
  message: string | null;
}

/** Payload of `POST /cd4ml-nb/compare`. */
export interface IComparison {
  reference: string;
  runs: IComparedRun[];
  goals: Record<string, string>;
  deltas: IMetricDelta[];
  diffs: IRunDiff[];
  gate: IGateVerdict | null;
}

/** Lifecycle of a job. */
export type JobState = 'queued' | 'running' | 'finished' | 'failed' | 'killed';

/** States a job never leaves. */
export const TERMINAL_JOB_STATES: ReadonlyArray<JobState> = [
  'finished',
  'failed',
  'killed'
];

/** Whether a job state is final. */
export function isTerminal(state: JobState | string): boolean {
  return (TERMINAL_JOB_STATES as ReadonlyArray<string>).includes(state);
}

/** Body of `POST /cd4ml-nb/jobs`. */
export interface IJobRequest {
  /** Notebook to run (server-root relative; either side of a pair). */
  path: string;
  /** Typed values (JSON) by parameter name; absent names keep their defaults. */
  parameters: Record<string, unknown>;
}

/** A notebook run started from the server: `GET /cd4ml-nb/jobs/ID`. */
export interface IJob {
  id: string;
  path: string;
  parameters: Record<string, unknown>;
  state: JobState;
  /** Cells executed so far, of the total. */
  progress: { done: number; total: number };
  /** MLflow run id, once the run exists. */
  run_id: string | null;
  /** MLflow experiment id of the run. */
  experiment: string | null;
  /** Why the job failed or was killed. */
  error: string | null;
  /** Server-root-relative path of the executed notebook (openable in Lab). */
  executed: string | null;
  /** Server-root-relative path of its HTML render. */
  html: string | null;
  /** Creation time, epoch seconds. */
  created: number;
  /** Metrics the run logged. */
  metrics: Record<string, number>;
}

/** One MLflow run, as listed by `GET /cd4ml-nb/runs`. */
export interface IRun {
  run_id: string;
  /** MLflow experiment id. */
  experiment: string;
  /** MLflow status: RUNNING, FINISHED, FAILED, KILLED, SCHEDULED. */
  status: string;
  /** Epoch seconds. */
  start_time: number | null;
  end_time: number | null;
  notebook: string | null;
  commit: string | null;
  params: Record<string, string>;
  metrics: Record<string, number>;
  /** `cd4ml.status.reason` of a run that did not finish, e.g. `cell-exception`. */
  reason: string | null;
  /**
   * What the run was (`cd4ml.kind`): run, trial, sweep, test, ci, reproduce, interactive,
   * schedule, pipeline or step. Absent from older servers: read as `run`.
   */
  kind?: string;
  /** The sweep a trial belongs to (`mlflow.parentRunId`), else `null`. */
  parent_run_id?: string | null;
  /** Index of the cell that failed, else `null`. */
  failed_cell?: number | null;
  /** One line: why a FAILED or KILLED run did not finish, else `null`. */
  message?: string | null;
}

/** Payload of `GET /cd4ml-nb/runs`. */
export interface IRunsPage {
  /** The branch's experiment (`null` when it has none yet). */
  experiment: string | null;
  runs: IRun[];
  next_page_token: string | null;
}

/** Query of `GET /cd4ml-nb/runs`. */
export interface IRunsQuery {
  /** Branch whose experiment is listed; the current branch when absent. */
  branch?: string;
  /** Only runs of this notebook. */
  notebook?: string;
  page_token?: string;
  max_results?: number;
}

/** A run with the branch it was listed under, as the runs table shows it. */
export interface IBranchRun extends IRun {
  /** Branch name (`null` when the server root is not in git). */
  branch: string | null;
  /** Whether it belongs to the current branch or the base branch. */
  side: 'current' | 'base';
}

/** The runs listed for one branch. */
export interface IRunsSection {
  branch: string | null;
  side: 'current' | 'base';
  runs: IRun[];
  nextPageToken: string | null;
  error: string | null;
}

/** The input a parameter is edited with. */
export type InputKind = 'checkbox' | 'tristate' | 'int' | 'float' | 'text' | 'json';

/** One field of the parameter form, read from the contract's JSON Schema. */
export interface IFormField {
  name: string;
  kind: InputKind;
  /** The declared type as the notebook writes it (`x-cd4ml-type`), e.g. `list[int]`. */
  type: string;
  /** What the form says the field takes, e.g. `int or None`. */
  typeLabel: string;
  nullable: boolean;
  help: string;
  /** Source of a default that is not a literal (e.g. `np.arange(3)`); the input stays empty to keep it. */
  expression: string | null;
  /** The default as JSON (`undefined` for an expression). */
  default: unknown;
  /** What the input shows for the default. */
  defaultRaw: string | boolean;
}

/** State of one field of the parameter form. */
export interface IFieldState {
  parameter: IFormField;
  /** What the input holds: text, or a boolean for a checkbox. */
  raw: string | boolean;
  /** Why the server's parser refuses the value, `null` when it fits (or is the default). */
  error: string | null;
  /** Whether the input differs from the notebook's default (it is then checked and sent). */
  changed: boolean;
}

/** What part of the experiments model changed. */
export type ExperimentsChange =
  | 'status'
  | 'notebook'
  | 'pairing'
  | 'params'
  | 'form'
  | 'job'
  | 'runs'
  | 'metric'
  | 'dirty'
  | 'synced';

/**
 * State behind the Experiments panel and the status-bar item.
 */
export interface IExperimentsModel extends IDisposable {
  /** Emitted with what changed. */
  readonly changed: ISignal<IExperimentsModel, ExperimentsChange>;

  readonly status: IStatus | null;
  readonly statusError: string | null;

  /** Path of the notebook experiments are run for (server-root relative). */
  readonly notebookPath: string | null;
  /** Whether the open notebook has unsaved changes (a run reads the saved file). */
  readonly notebookDirty: boolean;
  readonly pairing: IPairing | null;
  readonly pairingError: string | null;
  /** The diff the server sent when pairing was refused (the other side differs). */
  readonly pairingDiff: string | null;
  /** Whether a pairing request is on its way. */
  readonly pairingBusy: boolean;
  /** What the last sync of the pair did (e.g. `updated train.ipynb from train.py`). */
  readonly syncDone: string | null;

  readonly contract: IParamsContract | null;
  readonly contractError: string | null;
  readonly fields: ReadonlyArray<IFieldState>;

  /** The job shown: the last one started here, or the newest one of this notebook. */
  readonly job: IJob | null;
  /** Why the last submit, cancel or poll failed. */
  readonly jobError: string | null;
  /** Whether a submit is on its way. */
  readonly submitting: boolean;
  /** Whether the job shown is queued or running. */
  readonly jobActive: boolean;
  /** Whether the notebook followed is an executed copy of a run (no form, pairing or Run). */
  readonly executedCopy: boolean;
  /** Why Run is disabled (a value that does not fit, an executed copy), `null` when it is not. */
  readonly runBlocked: string | null;
  /** `cancelling` from the moment Cancel is pressed until the job ends, then `cancelled`. */
  readonly cancelState: 'cancelling' | 'cancelled' | null;

  readonly runs: ReadonlyArray<IRunsSection>;
  readonly runsLoading: boolean;
  /** Runs of both branches, with their branch. */
  readonly allRuns: ReadonlyArray<IBranchRun>;
  /** Every metric name the runs logged, sorted. */
  readonly metricNames: ReadonlyArray<string>;
  /** The metric charted and shown first in the table. */
  readonly metric: string | null;

  refreshStatus(): Promise<void>;
  setNotebook(path: string | null): Promise<void>;
  setNotebookDirty(dirty: boolean): void;
  refreshPairing(): Promise<void>;
  /** Re-read what a save can change: the pairing state and the parameter contract. */
  refreshNotebook(): Promise<void>;
  pair(): Promise<void>;
  /**
   * Sync the pair (`POST /cd4ml-nb/pairing/sync`): from the side that changed, or from `keep`
   * when both did. Emits `synced` when files were written.
   */
  sync(keep?: PairSide): Promise<void>;
  refreshParams(): Promise<void>;
  /** Set what a form input holds; the server checks it a moment later. */
  setValue(name: string, raw: string | boolean): void;
  resetValues(): void;
  /**
   * The values that differ from the defaults, typed by the server's parser (`POST params/check`),
   * or `null` (and a message under each field) when some do not fit.
   */
  checkValues(): Promise<Record<string, unknown> | null>;
  run(): Promise<IJob | null>;
  cancel(): Promise<void>;
  refreshRuns(): Promise<void>;
  loadMoreRuns(side: 'current' | 'base'): Promise<void>;
  setMetric(name: string | null): void;
  /** URL of the HTML render of the job shown, when it has one. */
  jobHtmlUrl(): string | null;
  /** URL of the MLflow UI (configured, or proxied by the server), `null` when there is none. */
  mlflowUiUrl(): string | null;
  /** URL of a run's page in the MLflow UI, `null` when there is no UI. */
  mlflowRunUrl(experimentId: string | null | undefined, runId: string | null | undefined): string | null;
}

/** The experiments model, shared by the panel, the status bar and the commands. */
export const IExperimentsModel = new Token<IExperimentsModel>(
  'cd4ml-nb:IExperimentsModel',
  'State of the cd4ml_nb experiments panel: branch, pairing, parameters, jobs and runs.'
);

/** Command ids. */
export namespace CommandIDs {
  export const run = 'cd4ml-nb:run';
  export const pair = 'cd4ml-nb:pair';
  export const show = 'cd4ml-nb:show';
  export const openDashboard = 'cd4ml-nb:open-dashboard';
  export const openMlflow = 'cd4ml-nb:open-mlflow';
}
