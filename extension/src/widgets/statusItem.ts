/**
 * Status-bar item: the git branch experiments are tracked under, and the active
 * notebook's pairing state, e.g. `cd4ml: try-random-forest · paired ✓`.
 */
import { Widget } from '@lumino/widgets';

import { describePairing } from '../model';
import { ExperimentsChange, IExperimentsModel } from '../tokens';

const ITEM_CLASS = 'cd4ml-nb-StatusItem';
const ERROR_CLASS = 'cd4ml-nb-mod-error';

/**
 * A text-only status-bar item.
 *
 * Every string from the server is untrusted: it is rendered with
 * `textContent` and `title`, never as HTML.
 */
export class StatusItem extends Widget {
  constructor(model: IExperimentsModel) {
    super({ node: document.createElement('div') });
    this._model = model;
    this.addClass(ITEM_CLASS);
    this._label = document.createElement('span');
    this._label.className = 'cd4ml-nb-StatusItem-label';
    this._pairing = document.createElement('span');
    this._pairing.className = 'cd4ml-nb-StatusItem-pairing';
    this._pairing.setAttribute('data-testid', 'cd4ml-status-pairing');
    this.node.append(this._label, this._pairing);
    model.changed.connect(this._onChange, this);
    this.render();
  }

  /** Show the model's branch and pairing state. */
  render(): void {
    const model = this._model;
    const status = model.status;
    if (status === null) {
      if (model.statusError !== null) {
        this.addClass(ERROR_CLASS);
        this._label.textContent = 'cd4ml: unavailable';
        this._pairing.textContent = '';
        this.node.title = `cd4ml_nb server extension did not answer: ${model.statusError}`;
      } else {
        this._label.textContent = 'cd4ml: …';
        this.node.title = 'cd4ml: loading status';
      }
      return;
    }
    this.removeClass(ERROR_CLASS);
    this._label.textContent =
      status.branch === null ? 'cd4ml: no git' : `cd4ml: ${status.branch}`;
    const pairing = model.notebookPath !== null ? describePairing(model.pairing) : '';
    this._pairing.textContent = pairing ? ` · ${pairing}` : '';
    this.toggleClass('cd4ml-nb-mod-out-of-sync', pairing !== '' && pairing !== 'paired ✓');

    const lines = [
      status.branch === null
        ? 'Branch: none (not a git repository)'
        : `Branch: ${status.branch}`,
      `Base branch: ${status.base_branch}`,
      `Tracking URI: ${status.tracking_uri}`
    ];
    const mlflowUi = model.mlflowUiUrl();
    if (mlflowUi) {
      lines.push(`MLflow UI: ${mlflowUi}`);
    }
    if (model.notebookPath !== null) {
      lines.push(`Notebook: ${model.notebookPath}${pairing ? ` (${pairing})` : ''}`);
    }
    if (model.statusError !== null) {
      lines.push(`Last refresh failed: ${model.statusError}`);
    }
    lines.push(`cd4ml_nb ${status.version}`);
    this.node.title = lines.join('\n');
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model.changed.disconnect(this._onChange, this);
    super.dispose();
  }

  private _onChange(_: IExperimentsModel, change: ExperimentsChange): void {
    if (change === 'status' || change === 'notebook' || change === 'pairing') {
      this.render();
    }
  }

  private _model: IExperimentsModel;
  private _label: HTMLSpanElement;
  private _pairing: HTMLSpanElement;
}
