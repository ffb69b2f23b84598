/**
 * The open notebook's pairing with its `.py` (Jupytext): its state, pairing it, and syncing
 * the pair. One request at a time; an answer for a notebook no longer followed is dropped.
 */
import { ServerConnection } from '@jupyterlab/services';
import { nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';

import { getPairing, pairNotebook, syncPair } from '../api';
import { Cd4mlRequestError, errorMessage } from '../request';
import { IPairing, PairSide } from '../tokens';

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

/** What changed: the pairing state, or (`synced`) files a sync wrote. */
export type PairingChange = 'pairing' | 'synced';

/** Options of {@link PairingModel}. */
export interface IPairingModelOptions {
  /** Connection to the Jupyter server (base URL, token). */
  settings: ServerConnection.ISettings;
}

/** The pairing of the notebook followed. */
export class PairingModel {
  constructor(options: IPairingModelOptions) {
    this._settings = options.settings;
  }

  get changed(): ISignal<PairingModel, PairingChange> {
    return this._changed;
  }

  get pairing(): IPairing | null {
    return this._pairing;
  }

  get pairingError(): string | null {
    return this._pairingError;
  }

  /** The diff the server sent when pairing or syncing was refused. */
  get pairingDiff(): string | null {
    return this._pairingDiff;
  }

  get pairingBusy(): boolean {
    return this._pairingBusy;
  }

  /** What the last sync did (e.g. `updated train.ipynb from train.py`). */
  get syncDone(): string | null {
    return this._syncDone;
  }

  /** Follow another notebook (or none), forgetting the last one's state; emits nothing. */
  setNotebook(path: string | null): void {
    this._path = path;
    this._generation++;
    this._pairing = null;
    this._pairingError = null;
    this._pairingDiff = null;
    this._syncDone = null;
  }

  /** Read `GET /cd4ml-nb/pairing` for the notebook. */
  async refresh(): Promise<void> {
    const path = this._path;
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

  /** `POST /cd4ml-nb/pairing` for the notebook; a refusal keeps the server's message and diff. */
  async pair(): Promise<void> {
    await this._request(
      path => pairNotebook(this._settings, path),
      pairing => {
        this._pairing = pairing;
      }
    );
  }

  /** Sync the pair, from the side that changed or from `keep`; emits `synced` when files were written. */
  async sync(keep?: PairSide): Promise<void> {
    let synced = false;
    await this._request(
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
    }
  }

  dispose(): void {
    this._isDisposed = true;
    Signal.clearData(this);
  }

  /**
   * One pairing request for the open notebook at a time: its answer is applied only if the
   * notebook did not change meanwhile, and a refusal keeps the server's message and diff.
   * `start` clears the caller's own state when the request goes out.
   */
  private async _request<T>(
    request: (path: string) => Promise<T>,
    apply: (answer: T) => void,
    start: () => void = () => undefined
  ): Promise<void> {
    const path = this._path;
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
        this._refused(reason);
      }
    } finally {
      this._pairingBusy = false;
      this._emit('pairing');
    }
  }

  /** Keep a refusal's message and, when the server sent one, its diff. */
  private _refused(reason: unknown): void {
    this._pairingError = errorMessage(reason);
    const body = reason instanceof Cd4mlRequestError ? reason.body : null;
    const diff = (body as { diff?: unknown } | null)?.diff;
    this._pairingDiff = typeof diff === 'string' && diff ? diff : null;
  }

  private _emit(change: PairingChange): void {
    if (!this._isDisposed) {
      this._changed.emit(change);
    }
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _changed = new Signal<PairingModel, PairingChange>(this);
  private _isDisposed = false;
  private _path: string | null = null;
  private _generation = 0;
  private _pairing: IPairing | null = null;
  private _pairingError: string | null = null;
  private _pairingDiff: string | null = null;
  private _syncDone: string | null = null;
  private _pairingBusy = false;
}
