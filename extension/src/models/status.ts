/**
 * The server's status (`GET /cd4ml-nb/status`): package version, git branch, base branch,
 * tracking store and its MLflow UI.
 */
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { getStatus } from '../api';
import { errorMessage } from '../request';
import { mlflowUiBase } from '../runs';
import { IStatus } from '../tokens';

/**
 * What reads the status for a view: the experiments model (shared by the panel, the status bar
 * and the dashboard), or a {@link StatusModel} of a view's own.
 */
export interface IStatusSource {
  readonly status: IStatus | null;
  /** Why the last read failed, `null` when it did not. */
  readonly statusError: string | null;
  refreshStatus(): Promise<void>;
}

/** Options of {@link StatusModel}. */
export interface IStatusModelOptions {
  /** Connection to the Jupyter server (base URL, token). */
  settings: ServerConnection.ISettings;
}

/** The status last read; `changed` after every read, whether it succeeded or not. */
export class StatusModel implements IStatusSource {
  constructor(options: IStatusModelOptions) {
    this._settings = options.settings;
  }

  get changed(): ISignal<StatusModel, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** The last status read (kept when a later read fails). */
  get status(): IStatus | null {
    return this._status;
  }

  get statusError(): string | null {
    return this._statusError;
  }

  /** Read the status again. */
  async refreshStatus(): Promise<void> {
    try {
      this._status = await getStatus(this._settings);
      this._statusError = null;
    } catch (error) {
      this._statusError = errorMessage(error);
    }
    if (!this._isDisposed) {
      this._changed.emit();
    }
  }

  /** URL of the MLflow UI (configured, or proxied by the server), `null` when there is none. */
  mlflowUiUrl(): string | null {
    return mlflowUiBase(this._status, this._settings.baseUrl);
  }

  dispose(): void {
    this._isDisposed = true;
    Signal.clearData(this);
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _changed = new Signal<StatusModel, void>(this);
  private _isDisposed = false;
  private _status: IStatus | null = null;
  private _statusError: string | null = null;
}
