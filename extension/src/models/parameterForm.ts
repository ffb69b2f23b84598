/**
 * The parameter form of the open notebook: its contract (`GET /cd4ml-nb/params`), one field per
 * parameter, and the server's check of what the user typed (`POST /cd4ml-nb/params/check`).
 *
 * Nothing here parses a value: the server's parser types the texts and says why one misfits.
 */
import { ServerConnection } from '@jupyterlab/services';
import { nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';

import { checkParams, getParams } from '../api';
import { fieldText, formFields, jsonEqual } from '../parameters';
import { errorMessage } from '../request';
import { IFieldState, IFormField, IParamsContract } from '../tokens';

/** What changed: the contract and its fields (`params`), or values and their check (`form`). */
export type FormChange = 'params' | 'form';

/** Options of {@link ParameterFormModel}. */
export interface IParameterFormOptions {
  /** Connection to the Jupyter server (base URL, token). */
  settings: ServerConnection.ISettings;
  /** Milliseconds after the last keystroke before the server checks the form (default 150). */
  checkDelay?: number;
  /** Translation of the messages the form builds (default: untranslated). */
  trans?: TranslationBundle;
}

/** A field holding `raw`: changed when it differs from the default's text; `error` kept until checked. */
function field(parameter: IFormField, raw: string | boolean, error: string | null = null): IFieldState {
  const changed = raw !== parameter.defaultRaw;
  return { parameter, raw, error: changed ? error : null, changed };
}

/** The form of the notebook followed. */
export class ParameterFormModel {
  constructor(options: IParameterFormOptions) {
    this._settings = options.settings;
    this._checkDelay = options.checkDelay ?? 150;
    this._trans = options.trans ?? nullTranslator.load('cd4ml_nb');
  }

  get changed(): ISignal<ParameterFormModel, FormChange> {
    return this._changed;
  }

  get contract(): IParamsContract | null {
    return this._contract;
  }

  get contractError(): string | null {
    return this._contractError;
  }

  get fields(): ReadonlyArray<IFieldState> {
    return this._fields;
  }

  /** Why the last check could not be made, `null` when it was. */
  get checkError(): string | null {
    return this._checkError;
  }

  /** Why the values cannot be run now (one that does not fit, or no check), `null` when they can. */
  get blocked(): string | null {
    const invalid = this._fields.find(f => f.error !== null);
    if (invalid) {
      return this._trans.__('%1: %2', invalid.parameter.name, invalid.error);
    }
    if (this._checkError !== null) {
      return this._trans.__('The values could not be checked: %1', this._checkError);
    }
    return null;
  }

  /** Follow another notebook (or none): no contract, no fields; emits nothing. */
  setNotebook(path: string | null): void {
    this._path = path;
    this._generation++;
    this._contract = null;
    this._contractError = null;
    this._fields = [];
    this._checkSeq++;
    this._checkError = null;
  }

  /**
   * Read the parameter contract. Values the user changed are kept for parameters
   * that still exist with the same type.
   */
  async refresh(): Promise<void> {
    const path = this._path;
    if (path === null) {
      return;
    }
    const generation = this._generation;
    let contract: IParamsContract | null = null;
    let error: string | null = null;
    try {
      contract = await getParams(this._settings, path);
    } catch (reason) {
      error = errorMessage(reason);
    }
    if (generation !== this._generation || this._isDisposed) {
      return;
    }
    const previous = new Map(this._fields.map(f => [f.parameter.name, f]));
    if (contract !== null && !contract.schema) {
      error = this._trans.__('the server sent no parameter schema: update cd4ml_nb on the server');
      contract = null;
    }
    this._contract = contract;
    this._contractError = error;
    this._checkError = null;
    this._fields = (contract?.schema ? formFields(contract.schema) : []).map(parameter => {
      const old = previous.get(parameter.name);
      const kept = old && old.changed && old.parameter.type === parameter.type;
      return field(parameter, kept ? old.raw : parameter.defaultRaw, kept ? old.error : null);
    });
    this._changed.emit('params');
    if (this._fields.some(f => f.changed)) {
      this._scheduleCheck();
    }
  }

  /** Set what a form input holds; it is checked a moment later. */
  setValue(name: string, raw: string | boolean): void {
    const index = this._fields.findIndex(f => f.parameter.name === name);
    if (index < 0) {
      return;
    }
    const fields = [...this._fields];
    fields[index] = field(fields[index].parameter, raw, fields[index].error);
    this._fields = fields;
    this._changed.emit('form');
    this._scheduleCheck();
  }

  /** Put every input back to the notebook's default. */
  resetValues(): void {
    this._checkSeq++; // a check on its way is for values no longer there
    this._checkError = null;
    this._fields = this._fields.map(f => field(f.parameter, f.parameter.defaultRaw));
    this._changed.emit('params');
  }

  /** The changed values typed by the server, or `null` (and a message per field) when some do not fit. */
  async checkValues(): Promise<Record<string, unknown> | null> {
    for (;;) {
      const seq = ++this._checkSeq;
      const checked = await this._check(seq);
      if (checked.current || this._isDisposed) {
        return checked.values;
      }
    }
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    if (this._checkTimer !== null) {
      clearTimeout(this._checkTimer);
    }
    Signal.clearData(this);
  }

  /** Check the form a moment after the last change (one request per pause in typing). */
  private _scheduleCheck(): void {
    const seq = ++this._checkSeq;
    if (this._checkTimer !== null) {
      clearTimeout(this._checkTimer);
    }
    this._checkTimer = setTimeout(() => {
      this._checkTimer = null;
      if (seq === this._checkSeq && !this._isDisposed) {
        void this._check(seq);
      }
    }, this._checkDelay);
  }

  /**
   * `POST /cd4ml-nb/params/check` with the texts of the changed fields; the answer is applied
   * when no newer check was started meanwhile (`current`).
   */
  private async _check(seq: number): Promise<{ current: boolean; values: Record<string, unknown> | null }> {
    const path = this._path;
    const generation = this._generation;
    const changed = this._fields.filter(f => f.changed);
    let values: Record<string, unknown> = {};
    let errors: Record<string, string> = {};
    let failure: string | null = null;
    if (path !== null && changed.length > 0) {
      const texts = Object.fromEntries(changed.map(f => [f.parameter.name, fieldText(f.raw)]));
      try {
        ({ values, errors } = await checkParams(this._settings, path, texts));
      } catch (reason) {
        failure = errorMessage(reason);
      }
    }
    if (seq !== this._checkSeq || generation !== this._generation || this._isDisposed) {
      return { current: false, values: null };
    }
    this._checkError = failure;
    this._fields = this._fields.map(f => ({ ...f, error: f.changed ? errors[f.parameter.name] ?? null : null }));
    this._changed.emit('form');
    if (failure !== null || Object.keys(errors).length > 0) {
      return { current: true, values: null };
    }
    const sent: Record<string, unknown> = {};
    for (const f of changed) {
      const name = f.parameter.name;
      const isDefault = f.parameter.expression === null && jsonEqual(values[name], f.parameter.default);
      if (Object.prototype.hasOwnProperty.call(values, name) && !isDefault) {
        sent[name] = values[name];
      }
    }
    return { current: true, values: sent };
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _checkDelay: number;
  private readonly _trans: TranslationBundle;
  private readonly _changed = new Signal<ParameterFormModel, FormChange>(this);
  private _isDisposed = false;
  private _path: string | null = null;
  private _generation = 0;
  private _checkSeq = 0;
  private _checkTimer: ReturnType<typeof setTimeout> | null = null;
  private _checkError: string | null = null;
  private _contract: IParamsContract | null = null;
  private _contractError: string | null = null;
  private _fields: IFieldState[] = [];
}
