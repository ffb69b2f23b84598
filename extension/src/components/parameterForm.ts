/**
 * The parameter form rendered from the contract's JSON Schema: one input per parameter, by type,
 * with the defaults filled in and, under a value the server's parser refuses, its reason.
 */
import { TranslationBundle, nullTranslator } from '@jupyterlab/translation';

import { IExperimentsModel, IFieldState } from '../tokens';
import { h, replaceChildren } from './dom';

type Input = HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement;

interface IRow {
  row: HTMLElement;
  input: Input;
  error: HTMLElement;
}

/** Builds inputs when the contract changes; updates messages as values are typed. */
export class ParameterForm {
  /**
   * @param model the experiments model
   * @param onSubmit called when Enter is pressed in a one-line input
   */
  constructor(
    model: IExperimentsModel,
    onSubmit: () => void,
    trans: TranslationBundle = nullTranslator.load('cd4ml_nb')
  ) {
    this._model = model;
    this._trans = trans;
    this._onSubmit = onSubmit;
    this.node = h('form', {
      className: 'cd4ml-nb-Section cd4ml-nb-ParamForm',
      testid: 'cd4ml-params',
      attrs: { novalidate: '' }
    });
    this.node.addEventListener('submit', event => {
      event.preventDefault();
      this._onSubmit();
    });
  }

  readonly node: HTMLFormElement;

  /** Rebuild every input from the model (contract read, notebook changed, reset). */
  render(): void {
    const model = this._model;
    this._rows.clear();
    if (model.notebookPath === null) {
      replaceChildren(this.node, []);
      return;
    }
    const trans = this._trans;
    const heading = h('h3', { className: 'cd4ml-nb-Heading', text: trans.__('Parameters') });
    if (model.contractError) {
      replaceChildren(this.node, [
        heading,
        h('p', { className: 'cd4ml-nb-Error', testid: 'cd4ml-params-error', text: model.contractError })
      ]);
      return;
    }
    if (model.contract === null) {
      replaceChildren(this.node, [heading, h('p', { className: 'cd4ml-nb-Hint', text: trans.__('Reading parameters…') })]);
      return;
    }
    if (model.fields.length === 0) {
      replaceChildren(this.node, [
        heading,
        h('p', {
          className: 'cd4ml-nb-Hint',
          testid: 'cd4ml-no-params',
          text: trans.__('No cell is tagged "parameters": the notebook runs with its own values.')
        })
      ]);
      return;
    }
    replaceChildren(this.node, [heading, ...model.fields.map(field => this._row(field))]);
    // A hidden submit button makes Enter in a text input submit the form.
    this.node.appendChild(h('button', { attrs: { type: 'submit', hidden: '', tabindex: '-1' } }));
  }

  /** Update messages and "changed" marks without touching what is being typed. */
  update(): void {
    for (const field of this._model.fields) {
      const row = this._rows.get(field.parameter.name);
      if (!row) {
        continue;
      }
      this._decorate(row, field);
      if (document.activeElement !== row.input) {
        this._setInput(row.input, field.raw);
      }
    }
  }

  private _row(field: IFieldState): HTMLElement {
    const parameter = field.parameter;
    const name = parameter.name;
    const id = `cd4ml-nb-param-${this._formId}-${name}`;
    const kind = parameter.kind;
    let input: Input;
    if (kind === 'checkbox') {
      const box = h('input', { className: 'cd4ml-nb-Checkbox' });
      box.type = 'checkbox';
      box.addEventListener('change', () => this._model.setValue(name, box.checked));
      input = box;
    } else if (kind === 'tristate') {
      const select = h('select', { className: 'jp-mod-styled cd4ml-nb-Input' }, [
        h('option', { text: 'true', attrs: { value: 'true' } }),
        h('option', { text: 'false', attrs: { value: 'false' } }),
        h('option', { text: 'None', attrs: { value: 'None' } })
      ]);
      select.addEventListener('change', () => this._model.setValue(name, select.value));
      input = select;
    } else if (kind === 'json') {
      const area = h('textarea', {
        className: 'jp-mod-styled cd4ml-nb-Input cd4ml-nb-Json',
        attrs: { rows: '2', spellcheck: 'false' }
      });
      area.addEventListener('input', () => this._model.setValue(name, area.value));
      input = area;
    } else {
      const text = h('input', {
        className: 'jp-mod-styled cd4ml-nb-Input',
        attrs: {
          spellcheck: 'false',
          autocomplete: 'off',
          inputmode: kind === 'int' ? 'numeric' : kind === 'float' ? 'decimal' : null
        }
      });
      text.type = 'text';
      text.addEventListener('input', () => this._model.setValue(name, text.value));
      input = text;
    }
    input.id = id;
    input.name = name;
    input.setAttribute('data-testid', `cd4ml-param-${name}`);
    input.setAttribute('data-type', parameter.type);
    if (parameter.expression !== null && !(input instanceof HTMLSelectElement)) {
      input.setAttribute('placeholder', this._trans.__('default: %1', parameter.expression));
    }
    this._setInput(input, field.raw);

    const label = h('label', { className: 'cd4ml-nb-ParamName', text: name, attrs: { for: id } });
    const type = h('span', { className: 'cd4ml-nb-ParamType', text: parameter.typeLabel });
    const error = h('div', {
      className: 'cd4ml-nb-FieldError',
      testid: `cd4ml-param-error-${name}`,
      attrs: { id: `${id}-error`, role: 'alert' }
    });
    input.setAttribute('aria-describedby', `${id}-error`);
    const help = parameter.help ? h('div', { className: 'cd4ml-nb-ParamHelp', text: parameter.help }) : null;
    const row = h(
      'div',
      { className: 'cd4ml-nb-Param', testid: `cd4ml-param-row-${name}` },
      kind === 'checkbox'
        ? [h('div', { className: 'cd4ml-nb-ParamHead' }, [input, label, type]), help, error]
        : [h('div', { className: 'cd4ml-nb-ParamHead' }, [label, type]), input, help, error]
    );
    const entry = { row, input, error };
    this._rows.set(name, entry);
    this._decorate(entry, field);
    return row;
  }

  private _decorate(entry: IRow, field: IFieldState): void {
    entry.error.textContent = field.error ?? '';
    entry.row.classList.toggle('cd4ml-nb-mod-invalid', field.error !== null);
    entry.row.classList.toggle('cd4ml-nb-mod-changed', field.changed);
    entry.input.setAttribute('aria-invalid', field.error !== null ? 'true' : 'false');
  }

  private _setInput(input: Input, raw: string | boolean): void {
    if (input instanceof HTMLInputElement && input.type === 'checkbox') {
      input.checked = raw === true;
    } else if (input.value !== String(raw)) {
      input.value = String(raw);
    }
  }

  private _model: IExperimentsModel;
  private _trans: TranslationBundle;
  private _onSubmit: () => void;
  private _rows = new Map<string, IRow>();
  private _formId = Private.nextId++;
}

namespace Private {
  export let nextId = 0;
}
