/**
 * Status-bar item: the git branch experiments are tracked under, and the active
 * notebook's pairing state, e.g. `cd4ml: try-random-forest · paired ✓`.
 */
import { ReactWidget } from '@jupyterlab/apputils';
import { TranslationBundle, nullTranslator } from '@jupyterlab/translation';
import * as React from 'react';

import { describePairing } from '../models/pairing';
import { ExperimentsChange, IExperimentsModel } from '../tokens';

const ITEM_CLASS = 'cd4ml-nb-StatusItem';
const ERROR_CLASS = 'cd4ml-nb-mod-error';

/**
 * A text-only status-bar item, rendered with React: every string from the server is
 * untrusted and rendered as text or as the `title`, never as HTML.
 */
export class StatusItem extends ReactWidget {
  constructor(model: IExperimentsModel, trans: TranslationBundle = nullTranslator.load('cd4ml_nb')) {
    super();
    this._model = model;
    this._trans = trans;
    this.addClass(ITEM_CLASS);
    model.changed.connect(this._onChange, this);
    this.update();
  }

  /** Show the model's branch and pairing state (the tooltip and classes are the widget node's). */
  render(): JSX.Element {
    const trans = this._trans;
    const model = this._model;
    const status = model.status;
    if (status === null) {
      let label: string;
      if (model.statusError !== null) {
        this.addClass(ERROR_CLASS);
        label = trans.__('cd4ml: unavailable');
        this.node.title = trans.__('cd4ml_nb server extension did not answer: %1', model.statusError);
      } else {
        label = trans.__('cd4ml: …');
        this.node.title = trans.__('cd4ml: loading status');
      }
      return (
        <>
          <span className="cd4ml-nb-StatusItem-label">{label}</span>
          <span className="cd4ml-nb-StatusItem-pairing" data-testid="cd4ml-status-pairing" />
        </>
      );
    }
    this.removeClass(ERROR_CLASS);
    const pairing = model.notebookPath !== null ? describePairing(model.pairing, trans) : '';
    const p = model.pairing;
    const inSync = !!p?.paired && !p.conflict && !p.missing && p.in_sync !== false;
    this.toggleClass('cd4ml-nb-mod-out-of-sync', pairing !== '' && !inSync);

    const lines = [
      status.branch === null
        ? trans.__('Branch: none (not a git repository)')
        : trans.__('Branch: %1', status.branch),
      trans.__('Base branch: %1', status.base_branch),
      trans.__('Tracking URI: %1', status.tracking_uri)
    ];
    const mlflowUi = model.mlflowUiUrl();
    if (mlflowUi) {
      lines.push(trans.__('MLflow UI: %1', mlflowUi));
    }
    if (model.notebookPath !== null) {
      lines.push(
        pairing
          ? trans.__('Notebook: %1 (%2)', model.notebookPath, pairing)
          : trans.__('Notebook: %1', model.notebookPath)
      );
    }
    if (model.statusError !== null) {
      lines.push(trans.__('Last refresh failed: %1', model.statusError));
    }
    lines.push(`cd4ml_nb ${status.version}`);
    this.node.title = lines.join('\n');
    return (
      <>
        <span className="cd4ml-nb-StatusItem-label">
          {status.branch === null ? trans.__('cd4ml: no git') : trans.__('cd4ml: %1', status.branch)}
        </span>
        <span className="cd4ml-nb-StatusItem-pairing" data-testid="cd4ml-status-pairing">
          {pairing ? ` · ${pairing}` : ''}
        </span>
      </>
    );
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
      this.update();
    }
  }

  private _model: IExperimentsModel;
  private _trans: TranslationBundle;
}
