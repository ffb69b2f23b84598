/**
 * The runs picked in the dashboard for comparison, and the server's comparison of them
 * (`POST /cd4ml-nb/compare`: `cd4ml-nb diff` per pair, metric deltas, the gate).
 */
import { ServerConnection } from '@jupyterlab/services';

import { compareRuns } from '../api';
import { errorMessage } from '../request';
import { IBranchRun, IComparison } from '../tokens';

/** The selection and its comparison; `changed` is called after every change. */
export class RunComparison {
  constructor(
    private readonly _settings: ServerConnection.ISettings,
    private readonly _changed: () => void
  ) {}

  /** Run ids selected, in the order they were picked. */
  get selected(): ReadonlyArray<string> {
    return this._selected;
  }

  get comparison(): IComparison | null {
    return this._comparison;
  }

  get comparing(): boolean {
    return this._comparing;
  }

  get error(): string | null {
    return this._error;
  }

  /** Select or unselect a run. */
  toggle(runId: string): void {
    this._selected = this._selected.includes(runId)
      ? this._selected.filter(id => id !== runId)
      : [...this._selected, runId];
    this._changed();
  }

  clear(): void {
    this._selected = [];
    this._comparison = null;
    this._error = null;
    this._changed();
  }

  /** Unselect the runs no longer read (emits nothing: the caller does). */
  keep(runs: ReadonlyArray<IBranchRun>): void {
    const known = new Set(runs.map(r => r.run_id));
    this._selected = this._selected.filter(id => known.has(id));
  }

  /**
   * Compare the selected runs on the server; a base-branch run, when one is selected,
   * is the reference (first), so deltas read "branch against base".
   */
  async compare(
    runs: ReadonlyArray<IBranchRun>,
    metric: string | null,
    maxRegression: string
  ): Promise<IComparison | null> {
    if (this._selected.length < 2) {
      this._error = 'Select two or more runs to compare.';
      this._changed();
      return null;
    }
    const side = (id: string) => runs.find(r => r.run_id === id)?.side;
    const ids = [...this._selected].sort((a, b) => Number(side(a) !== 'base') - Number(side(b) !== 'base'));
    this._comparing = true;
    this._error = null;
    this._changed();
    try {
      this._comparison = await compareRuns(this._settings, {
        run_ids: ids,
        metric: metric ?? undefined,
        max_regression: maxRegression
      });
    } catch (reason) {
      this._comparison = null;
      this._error = errorMessage(reason);
    }
    this._comparing = false;
    this._changed();
    return this._comparison;
  }

  private _selected: string[] = [];
  private _comparison: IComparison | null = null;
  private _comparing = false;
  private _error: string | null = null;
}
