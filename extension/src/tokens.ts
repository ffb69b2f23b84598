/**
 * Contracts of the frontend: the tokens other plugins use (the experiments model, the runs
 * source), the state shapes the views read, the command ids, and (re-exported from
 * `payloads.ts`) the REST payloads shared with the cd4ml_nb server extension.
 *
 * Every string that comes from the server (paths, branch names, parameter values, errors) is
 * untrusted: views render it as text only.
 */
import { Token } from '@lumino/coreutils';
import { IDisposable } from '@lumino/disposable';
import { ISignal } from '@lumino/signaling';

import { IJob, IPairing, IParamsContract, IRun, IStatus, PairSide } from './payloads';

export * from './payloads';

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

/** Which runs a reader wants: the branches, one notebook or all, and how many per request. */
export interface IRunsScope {
  /** The current branch (names the `current` section, read without a branch query). */
  current: string | null;
  /** The branch compared with; no `base` section when absent or the current branch itself. */
  base: string | null;
  /** Only this notebook's runs (server-root relative); every run when absent. */
  notebook?: string | null;
  /** Runs asked per branch and request. */
  pageSize: number;
}

/**
 * The one source of runs (`GET /cd4ml-nb/runs`) the panel and the dashboard read through: it
 * keeps the last sections read per scope and says when the runs on the server changed.
 */
export interface IRunsSource extends IDisposable {
  /** Emitted when the runs on the server changed (a job ended): every reader reads again. */
  readonly invalidated: ISignal<IRunsSource, void>;
  /** The sections last read for a scope, `null` before the first read. */
  sections(scope: IRunsScope): ReadonlyArray<IRunsSection> | null;
  /** Read the first page of each branch of the scope (one request per branch at a time). */
  load(scope: IRunsScope): Promise<IRunsSection[]>;
  /**
   * Read the next page of the branches of the scope that have more (`side`: of that branch only).
   * `null` when the scope was never read, or read again meanwhile.
   */
  loadMore(scope: IRunsScope, side?: IRunsSection['side']): Promise<IRunsSection[] | null>;
  /** Forget what was read and tell every reader to read again. */
  invalidate(): void;
}

/** The runs source shared by the Experiments panel and the dashboard. */
export const IRunsSource = new Token<IRunsSource>(
  'cd4ml-nb:IRunsSource',
  'The runs of this branch and the base branch, read once for the panel and the dashboard.'
);

/** Command ids. */
export namespace CommandIDs {
  export const run = 'cd4ml-nb:run';
  export const pair = 'cd4ml-nb:pair';
  export const show = 'cd4ml-nb:show';
  export const openDashboard = 'cd4ml-nb:open-dashboard';
  export const openMlflow = 'cd4ml-nb:open-mlflow';
}
