/**
 * The settings of cd4ml_nb (`schema/model.json`, read under the `cd4ml-nb:model` plugin id):
 * read at activation and followed afterwards, so a change in the Settings Editor applies at once,
 * without a reload, to the job and branch polls, and to every open dashboard.
 */
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { JSONExt, ReadonlyPartialJSONObject } from '@lumino/coreutils';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { DashboardModel } from './dashboard/model';

/** Id of the settings (schema/model.json) every plugin here reads. */
export const SETTINGS_ID = 'cd4ml-nb:model';

/** The settings, with their defaults when the registry is absent or fails. */
export interface ICd4mlSettings {
  jobPollInterval: number;
  statusPollInterval: number;
  runsPollInterval: number;
  pageSize: number;
  defaultMetric: string;
  baseBranch: string;
}

/** The schema's defaults. */
export const DEFAULT_SETTINGS: Readonly<ICd4mlSettings> = {
  jobPollInterval: 1000,
  statusPollInterval: 30000,
  runsPollInterval: 15000,
  pageSize: 25,
  defaultMetric: '',
  baseBranch: ''
};

/** The settings in a composite, a default for each one missing or of the wrong type. */
export function readSettings(composite: ReadonlyPartialJSONObject | null | undefined): ICd4mlSettings {
  const values: Record<string, unknown> = { ...DEFAULT_SETTINGS };
  for (const [key, fallback] of Object.entries(DEFAULT_SETTINGS)) {
    const value = composite?.[key];
    const fits =
      typeof value === typeof fallback && (typeof value !== 'number' || (Number.isFinite(value) && value > 0));
    if (fits) {
      values[key] = value;
    }
  }
  return values as unknown as ICd4mlSettings;
}

/** The settings now, and a signal when the user changes them. */
export class Cd4mlSettings implements IDisposable {
  /** Read the settings (the defaults when there is no registry or it fails) and follow them. */
  static async load(registry: ISettingRegistry | null): Promise<Cd4mlSettings> {
    if (!registry) {
      return new Cd4mlSettings(null);
    }
    try {
      return new Cd4mlSettings(await registry.load(SETTINGS_ID));
    } catch (reason) {
      console.warn('cd4ml_nb: settings not read, using the defaults:', reason);
      return new Cd4mlSettings(null);
    }
  }

  constructor(settings: ISettingRegistry.ISettings | null) {
    this._settings = settings;
    this._values = readSettings(settings?.composite);
    settings?.changed.connect(this._onChanged, this);
  }

  get values(): Readonly<ICd4mlSettings> {
    return this._values;
  }

  /** Emitted with the new values when some changed. */
  get changed(): ISignal<Cd4mlSettings, Readonly<ICd4mlSettings>> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Call `apply` with the values now and after every change, until the result is disposed. */
  follow(apply: (values: Readonly<ICd4mlSettings>) => void): IDisposable {
    apply(this._values);
    const slot = (_: Cd4mlSettings, values: Readonly<ICd4mlSettings>) => apply(values);
    this._changed.connect(slot);
    return new DisposableDelegate(() => this._changed.disconnect(slot));
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._settings?.changed.disconnect(this._onChanged, this);
    Signal.clearData(this);
  }

  private _onChanged(): void {
    const values = readSettings(this._settings?.composite);
    if (!JSONExt.deepEqual({ ...values }, { ...this._values })) {
      this._values = values;
      this._changed.emit(values);
    }
  }

  private readonly _settings: ISettingRegistry.ISettings | null;
  private readonly _changed = new Signal<Cd4mlSettings, Readonly<ICd4mlSettings>>(this);
  private _values: ICd4mlSettings;
  private _isDisposed = false;
}

/** A poll's frequency within what `Poll` takes (interval ≤ max ≤ `Poll.MAX_INTERVAL`). */
function frequency(interval: number, backoff: boolean, factor: number): IPoll.Frequency {
  const max = Math.min(interval * factor, Poll.MAX_INTERVAL);
  return { interval: Math.min(interval, max), backoff, max };
}

/** The branch poll: every interval, no back-off. */
export function statusFrequency(values: Readonly<ICd4mlSettings>): IPoll.Frequency {
  return frequency(values.statusPollInterval, false, 1);
}

/** The dashboard's refresh: every interval while visible, backing off to eight on errors. */
export function runsFrequency(values: Readonly<ICd4mlSettings>): IPoll.Frequency {
  return frequency(values.runsPollInterval, true, 8);
}

/** Give a poll another frequency; its next tick comes one new interval from now. */
export function retime(poll: Poll, next: IPoll.Frequency): void {
  if (poll.isDisposed || JSONExt.deepEqual({ ...poll.frequency }, { ...next })) {
    return;
  }
  poll.frequency = next;
  void poll.schedule({ interval: poll.frequency.interval });
}

/** Keep the job poll (of the experiments model) and the branch poll to the settings. */
export function followExperimentsSettings(
  settings: Cd4mlSettings,
  model: { pollInterval: number },
  statusPoll: Poll
): IDisposable {
  return settings.follow(values => {
    model.pollInterval = values.jobPollInterval;
    retime(statusPoll, statusFrequency(values));
  });
}

/** Keep an open dashboard (its table, charts, base branch and refresh poll) to the settings. */
export function followDashboardSettings(settings: Cd4mlSettings, model: DashboardModel, poll: Poll): IDisposable {
  return settings.follow(values => {
    model.configure({
      pageSize: values.pageSize,
      defaultMetric: values.defaultMetric || null,
      baseBranch: values.baseBranch || null
    });
    retime(poll, runsFrequency(values));
  });
}
