/**
 * The one runs loader and cache of the frontend: every read of `GET /cd4ml-nb/runs` goes
 * through a {@link RunsSource}, for the panel (one notebook's runs) and the dashboard (every run
 * of the branches) alike, and a job that ends invalidates it so both read again.
 */
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { getRuns } from '../api';
import { errorMessage, httpStatus } from '../request';
import { IRunsScope, IRunsSection, IRunsSource } from '../tokens';

/** Scopes whose sections are kept; the oldest read is forgotten first. */
const KEPT_SCOPES = 32;

/** Options of {@link RunsSource}. */
export interface IRunsSourceOptions {
  /** Connection to the Jupyter server (base URL, token). */
  settings: ServerConnection.ISettings;
}

/** What the source holds for one scope. */
interface IEntry {
  /** The sections last read, `null` before the first read. */
  sections: IRunsSection[] | null;
  /** The read on its way, shared by whoever asks for the same scope meanwhile. */
  reading: Promise<IRunsSection[]> | null;
  /** Bumped by every read and by {@link RunsSource.invalidate}: older answers are not kept. */
  generation: number;
}

/** The base branch a scope reads, `null` when it reads the current branch only. */
function baseOf(scope: IRunsScope): string | null {
  return scope.base && scope.base !== scope.current ? scope.base : null;
}

/** One key per scope that reads the same runs. */
export function scopeKey(scope: IRunsScope): string {
  return JSON.stringify([scope.current, baseOf(scope), scope.notebook || null, scope.pageSize]);
}

/** Reads runs a page at a time, keeps the last sections per scope, tells readers to read again. */
export class RunsSource implements IRunsSource {
  constructor(options: IRunsSourceOptions) {
    this._settings = options.settings;
  }

  get invalidated(): ISignal<IRunsSource, void> {
    return this._invalidated;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  sections(scope: IRunsScope): ReadonlyArray<IRunsSection> | null {
    return this._entries.get(scopeKey(scope))?.sections ?? null;
  }

  load(scope: IRunsScope): Promise<IRunsSection[]> {
    const entry = this._entry(scopeKey(scope));
    if (entry.reading) {
      return entry.reading;
    }
    const generation = ++entry.generation;
    const wanted: Array<[IRunsSection['side'], string | null]> = [['current', scope.current]];
    const base = baseOf(scope);
    if (base) {
      wanted.push(['base', base]);
    }
    const reading = Promise.all(wanted.map(([side, branch]) => this._page(scope, side, branch, null))).then(
      sections => {
        if (entry.reading === reading) {
          entry.reading = null;
        }
        if (generation === entry.generation) {
          entry.sections = sections;
        }
        return sections;
      }
    );
    entry.reading = reading;
    return reading;
  }

  async loadMore(scope: IRunsScope, side?: IRunsSection['side']): Promise<IRunsSection[] | null> {
    const entry = this._entries.get(scopeKey(scope));
    const sections = entry?.sections;
    if (!entry || !sections) {
      return null;
    }
    const generation = entry.generation;
    const more = await Promise.all(
      sections.map(s =>
        s.nextPageToken && (side === undefined || s.side === side)
          ? this._page(scope, s.side, s.branch, s.nextPageToken)
          : null
      )
    );
    if (generation !== entry.generation || entry.sections === null || this._isDisposed) {
      return null;
    }
    entry.sections = entry.sections.map((s, i) => {
      const page = more[i];
      return page === null
        ? s
        : {
            ...s,
            runs: [...s.runs, ...page.runs],
            nextPageToken: page.error ? s.nextPageToken : page.nextPageToken,
            error: page.error
          };
    });
    return entry.sections;
  }

  invalidate(): void {
    if (this._isDisposed) {
      return;
    }
    // Answers on their way were asked before the change: none of them is kept or shared.
    for (const entry of this._entries.values()) {
      entry.generation++;
      entry.reading = null;
    }
    this._invalidated.emit();
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._entries.clear();
    Signal.clearData(this);
  }

  /** The entry of a scope, made (and the oldest forgotten) when there is none. */
  private _entry(key: string): IEntry {
    let entry = this._entries.get(key);
    if (entry) {
      this._entries.delete(key); // most recently used last
    } else {
      entry = { sections: null, reading: null, generation: 0 };
      if (this._entries.size >= KEPT_SCOPES) {
        this._entries.delete(this._entries.keys().next().value as string);
      }
    }
    this._entries.set(key, entry);
    return entry;
  }

  /**
   * One page of one branch. A notebook the server does not know (404) has no runs, which is
   * not an error to show; any other failure is kept in the section.
   */
  private async _page(
    scope: IRunsScope,
    side: IRunsSection['side'],
    branch: string | null,
    pageToken: string | null
  ): Promise<IRunsSection> {
    try {
      const page = await getRuns(this._settings, {
        branch: side === 'base' && branch ? branch : undefined,
        notebook: scope.notebook || undefined,
        page_token: pageToken ?? undefined,
        max_results: scope.pageSize
      });
      return { branch, side, runs: page.runs ?? [], nextPageToken: page.next_page_token ?? null, error: null };
    } catch (reason) {
      const unknownNotebook = !!scope.notebook && httpStatus(reason) === 404;
      return { branch, side, runs: [], nextPageToken: null, error: unknownNotebook ? null : errorMessage(reason) };
    }
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _entries = new Map<string, IEntry>();
  private readonly _invalidated = new Signal<IRunsSource, void>(this);
  private _isDisposed = false;
}
