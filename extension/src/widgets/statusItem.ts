/**
 * Status-bar item: shows the git branch experiments are tracked under.
 */
import { Widget } from '@lumino/widgets';

import { IStatus } from '../tokens';

const ITEM_CLASS = 'cd4ml-nb-StatusItem';
const ERROR_CLASS = 'cd4ml-nb-mod-error';

/**
 * A text-only status-bar item.
 *
 * Every string from the server is untrusted: it is rendered with
 * `textContent` and `title`, never as HTML.
 */
export class StatusItem extends Widget {
  constructor() {
    super({ node: document.createElement('div') });
    this.addClass(ITEM_CLASS);
    this._label = document.createElement('span');
    this._label.className = 'cd4ml-nb-StatusItem-label';
    this.node.appendChild(this._label);
    this._label.textContent = 'cd4ml: …';
    this.node.title = 'cd4ml: loading status';
  }

  /** Show a status payload from `GET /cd4ml-nb/status`. */
  showStatus(status: IStatus): void {
    this.removeClass(ERROR_CLASS);
    this._label.textContent =
      status.branch === null ? 'cd4ml: no git' : `cd4ml: ${status.branch}`;
    const lines = [
      status.branch === null
        ? 'Branch: none (not a git repository)'
        : `Branch: ${status.branch}`,
      `Base branch: ${status.base_branch}`,
      `Tracking URI: ${status.tracking_uri}`
    ];
    if (status.mlflow_ui_url) {
      lines.push(`MLflow UI: ${status.mlflow_ui_url}`);
    }
    lines.push(`cd4ml_nb ${status.version}`);
    this.node.title = lines.join('\n');
  }

  /** Show that the status could not be read. */
  showError(reason: unknown): void {
    this.addClass(ERROR_CLASS);
    this._label.textContent = 'cd4ml: unavailable';
    const message = reason instanceof Error ? reason.message : String(reason);
    this.node.title = `cd4ml_nb server extension did not answer: ${message}`;
  }

  private _label: HTMLSpanElement;
}
