/**
 * Branches plugin: the Branches view in the main area (palette: Open Branches) — every branch
 * experiment with its state, filtered by state; a click lists that branch's runs.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { mainAreaPlugin } from '../mainArea';
import { BranchesModel, IBranchRow, STATES } from './branches';

/** The command that opens the Branches view. */
export const OPEN_BRANCHES = 'cd4ml-nb:open-branches';
const REFRESH_MS = 30_000;

function cell(row: HTMLTableRowElement, text: string, tag: 'td' | 'th' = 'td'): void {
  const node = document.createElement(tag);
  node.textContent = text;
  row.appendChild(node);
}

function num(value: number | null): string {
  return value === null || value === undefined ? '–' : value.toPrecision(4);
}

function when(epoch: number | null): string {
  return epoch ? new Date(epoch * 1000).toLocaleString() : '–';
}

/** The list of branches and the runs of the one picked, drawn from the model. */
export class BranchesView extends Widget {
  constructor(
    private readonly _model: BranchesModel,
    private readonly _trans: TranslationBundle
  ) {
    super();
    this.addClass('cd4ml-nb-branches');
    this.node.style.overflow = 'auto';
    this.node.style.padding = '8px';
    _model.changed.connect(this._render, this);
    this._render();
  }

  private _render(): void {
    const t = this._trans;
    const model = this._model;
    const node = this.node;
    node.textContent = '';
    const bar = document.createElement('div');
    const label = document.createElement('label');
    label.textContent = t.__('State: ');
    const select = document.createElement('select');
    select.className = 'cd4ml-nb-branches-state';
    for (const state of STATES) {
      const option = document.createElement('option');
      option.value = state;
      option.textContent = state;
      option.selected = state === model.state;
      select.appendChild(option);
    }
    select.onchange = () => (model.state = select.value);
    label.appendChild(select);
    bar.appendChild(label);
    if (model.data) {
      const info = document.createElement('span');
      info.textContent = `  ${t.__('base')}: ${model.data.base} · ${t.__('current')}: ${model.data.current} (${model.data.experiment})`;
      bar.appendChild(info);
    }
    node.appendChild(bar);
    if (model.error) {
      const error = document.createElement('div');
      error.className = 'cd4ml-nb-error';
      error.textContent = model.error;
      node.appendChild(error);
    }
    node.appendChild(this._table(model.rows));
    const picked = model.picked;
    if (picked) {
      const title = document.createElement('h3');
      title.textContent = t.__('Runs of %1 (%2)', picked.branch, picked.experiment);
      node.appendChild(title);
      const runs = document.createElement('table');
      runs.className = 'cd4ml-nb-branch-runs';
      const head = runs.insertRow();
      for (const name of [t.__('Run'), t.__('Status'), t.__('Started'), t.__('Commit'), picked.metric ?? t.__('Metric')]) {
        cell(head, name, 'th');
      }
      for (const run of model.runs) {
        const row = runs.insertRow();
        cell(row, run.run_id.slice(0, 8));
        cell(row, run.status);
        cell(row, when(run.start_time));
        cell(row, (run.commit ?? '–').slice(0, 8));
        cell(row, picked.metric ? num(run.metrics[picked.metric] ?? null) : '–');
      }
      node.appendChild(runs);
    }
  }

  private _table(rows: IBranchRow[]): HTMLTableElement {
    const t = this._trans;
    const table = document.createElement('table');
    table.className = 'cd4ml-nb-branches-table';
    const head = table.insertRow();
    for (const name of ['Branch', 'State', 'Runs', 'Metric', 'Latest', 'Best', 'Merge commit', 'Last run', 'Experiment']) {
      cell(head, t.__(name), 'th');
    }
    for (const branch of rows) {
      const row = table.insertRow();
      row.dataset.experiment = branch.experiment;
      row.style.cursor = 'pointer';
      if (this._model.picked?.experiment === branch.experiment) {
        row.style.fontWeight = 'bold';
      }
      cell(row, branch.branch);
      cell(row, branch.archived ? `${branch.state} (${t.__('archived')})` : branch.state);
      cell(row, String(branch.runs));
      cell(row, branch.metric ?? '–');
      cell(row, num(branch.latest));
      cell(row, num(branch.best));
      cell(row, (branch.merge_commit ?? '–').slice(0, 10));
      cell(row, when(branch.last_run));
      cell(row, branch.experiment);
      row.onclick = () => void this._model.pick(branch);
    }
    return table;
  }
}

export const branchesPlugin = mainAreaPlugin(
  'cd4ml-nb:branches',
  'Branches: every branch experiment with its state; the runs of the branch picked.',
  (app, trans) => ({
    name: 'branches',
    command: OPEN_BRANCHES,
    label: trans.__('Open Branches'),
    caption: trans.__('Every branch experiment with its state (active, merged, squash-merged, deleted)'),
    title: trans.__('Branches'),
    create: () => {
      const model = new BranchesModel(app.serviceManager.serverSettings);
      return { content: new BranchesView(model, trans), model, frequency: { interval: REFRESH_MS, backoff: false } };
    }
  })
);
