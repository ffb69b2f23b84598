/**
 * The REST payloads of the cd4ml_nb server extension: the JSON returned under `/cd4ml-nb/…`
 * and the bodies and queries sent there. Keep them in step with `cd4ml_nb/routes.py`.
 *
 * Every string in them comes from the server (paths, branch names, parameter values, errors)
 * and is untrusted: views render it as text only. `tokens.ts` re-exports all of them.
 */
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
  /** A sweep's or study's trial number (`cd4ml.trial`), else `null`. */
  trial?: number | null;
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
