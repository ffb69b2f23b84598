/**
 * Branches over time in the Lab: every branch experiment with its state (`GET /cd4ml-nb/branches`,
 * what `cd4ml-nb branches` lists) and the runs of the one picked (`GET /cd4ml-nb/runs?branch=`).
 */
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { getRuns } from '../api';
import { IRun } from '../payloads';
import { errorMessage, requestAPI } from '../request';

/** One branch experiment. */
export interface IBranchRow {
  branch: string;
  experiment: string;
  /** active, merged, squash-merged or deleted. */
  state: string;
  /** Deleted in MLflow (`cd4ml-nb branches restore` brings it back). */
  archived: boolean;
  runs: number;
  metric: string | null;
  goal: string | null;
  latest: number | null;
  best: number | null;
  merged_into: string | null;
  merge_commit: string | null;
  /** Epoch seconds. */
  last_run: number | null;
  /** The `branch` value `GET /cd4ml-nb/runs` takes to read this line's runs. */
  query: string;
}

/** `GET /cd4ml-nb/branches`. */
export interface IBranches {
  base: string;
  current: string;
  experiment: string;
  branches: IBranchRow[];
}

/** Read the branch experiments. */
export function getBranches(settings: ServerConnection.ISettings): Promise<IBranches> {
  return requestAPI<IBranches>('branches', settings, { method: 'GET' });
}

/** The states a filter can keep (`all` keeps every row). */
export const STATES = ['all', 'active', 'merged', 'squash-merged', 'deleted'];

/** The rows a state filter keeps. */
export function filterRows(rows: IBranchRow[], state: string): IBranchRow[] {
  return state === 'all' ? rows : rows.filter(row => row.state === state);
}

/** The Branches view's state: the list, the state filter, the branch picked and its runs. */
export class BranchesModel {
  constructor(private readonly _settings: ServerConnection.ISettings) {}

  get changed(): ISignal<this, void> {
    return this._changed;
  }
  get data(): IBranches | null {
    return this._data;
  }
  get error(): string | null {
    return this._error;
  }
  get state(): string {
    return this._state;
  }
  set state(value: string) {
    this._state = value;
    this._changed.emit();
  }
  /** The rows the state filter keeps. */
  get rows(): IBranchRow[] {
    return filterRows(this._data?.branches ?? [], this._state);
  }
  /** The row whose runs are shown. */
  get picked(): IBranchRow | null {
    return this._picked;
  }
  get runs(): IRun[] {
    return this._runs;
  }

  /** Read the list again (and the picked branch's runs). */
  async refresh(): Promise<void> {
    try {
      this._data = await getBranches(this._settings);
      this._error = null;
      if (this._picked) {
        const again = this._data.branches.find(row => row.experiment === this._picked?.experiment) ?? null;
        await this.pick(again);
        return;
      }
    } catch (e) {
      this._error = errorMessage(e);
    }
    this._changed.emit();
  }

  /** Show the runs of ``row`` (none when null or archived). */
  async pick(row: IBranchRow | null): Promise<void> {
    this._picked = row;
    this._runs = [];
    if (row && !row.archived) {
      try {
        this._runs = (await getRuns(this._settings, { branch: row.query, max_results: 100 })).runs;
      } catch (e) {
        this._error = errorMessage(e);
      }
    }
    this._changed.emit();
  }

  dispose(): void {
    Signal.clearData(this);
  }

  private _data: IBranches | null = null;
  private _error: string | null = null;
  private _state = 'all';
  private _picked: IBranchRow | null = null;
  private _runs: IRun[] = [];
  private _changed = new Signal<this, void>(this);
}
