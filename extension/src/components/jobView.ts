/**
 * The job being run: its state, a progress bar over the cells, *Cancel*, and once it
 * has ended its metrics, error and links to the executed notebook and the MLflow run.
 *
 * The nodes are built once and updated in place: the job is polled every second and a
 * click on *Cancel* must not land on a node that was just replaced.
 */
import { TranslationBundle, nullTranslator } from '@jupyterlab/translation';

import { samePath } from '../model';
import { formatMetric, formatParams } from '../runs';
import { IExperimentsModel, JobState, isTerminal } from '../tokens';
import { button, h, replaceChildren } from './dom';

/** What the view asks of the application. */
export interface IJobViewActions {
  /** Open a server-root-relative path in JupyterLab (rejects when it cannot be opened). */
  openPath(path: string): Promise<unknown>;
}

function show(node: HTMLElement, visible: boolean): void {
  node.hidden = !visible;
}

export class JobView {
  constructor(
    model: IExperimentsModel,
    actions: IJobViewActions,
    trans: TranslationBundle = nullTranslator.load('cd4ml_nb')
  ) {
    this._model = model;
    this._trans = trans;
    this._stateLabels = {
      queued: trans.__('queued'),
      running: trans.__('running'),
      finished: trans.__('finished'),
      failed: trans.__('failed'),
      killed: trans.__('killed')
    };
    this.node = h('section', { className: 'cd4ml-nb-Section cd4ml-nb-Job', testid: 'cd4ml-job' });

    this._state = h('span', { className: 'cd4ml-nb-JobState', testid: 'cd4ml-job-state' });
    this._progressText = h('span', { className: 'cd4ml-nb-ProgressText', testid: 'cd4ml-progress-text' });
    this._cancel = button(trans.__('Cancel'), () => void model.cancel(), {
      testid: 'cd4ml-cancel-button',
      title: trans.__('Stop the kernel; the run ends KILLED')
    });
    this._fill = h('div', { className: 'cd4ml-nb-ProgressFill' });
    this._bar = h(
      'div',
      {
        className: 'cd4ml-nb-Progress',
        testid: 'cd4ml-progress',
        attrs: { role: 'progressbar', 'aria-valuemin': '0', 'aria-label': trans.__('Cells executed') }
      },
      [this._fill]
    );
    this._path = h('div', { className: 'cd4ml-nb-Hint' });
    this._params = h('div', { className: 'cd4ml-nb-Hint', testid: 'cd4ml-job-params' });
    this._runId = h('code', { testid: 'cd4ml-job-run-id' });
    this._runLine = h('div', { className: 'cd4ml-nb-Hint' }, [trans.__('MLflow run '), this._runId]);
    this._error = h('pre', { className: 'cd4ml-nb-Error', testid: 'cd4ml-job-error' });
    this._metrics = h('dl', { className: 'cd4ml-nb-Metrics', testid: 'cd4ml-job-metrics' });
    this._openError = h('p', { className: 'cd4ml-nb-Error cd4ml-nb-OpenError', testid: 'cd4ml-open-error' });
    this._openError.hidden = true;
    this._open = button(trans.__('Open executed notebook'), () => {
      const executed = this._model.job?.executed;
      if (!executed) {
        return;
      }
      this._openError.hidden = true;
      actions.openPath(executed).catch(reason => {
        const message = reason instanceof Error ? reason.message : String(reason);
        this._openError.textContent =
          trans.__('Could not open %1: %2', executed, message) +
          (executed.split('/').some(part => part.startsWith('.'))
            ? trans.__(' (it is in a hidden folder: use the HTML render, or start Jupyter with --ContentsManager.allow_hidden=True)')
            : '');
        this._openError.hidden = false;
      });
    }, { testid: 'cd4ml-open-executed' });
    this._mlflow = h('a', {
      className: 'cd4ml-nb-Link',
      testid: 'cd4ml-mlflow-link',
      text: trans.__('Open in MLflow'),
      attrs: { target: '_blank', rel: 'noopener noreferrer' }
    });
    this._html = h('a', {
      className: 'cd4ml-nb-Link',
      testid: 'cd4ml-html-link',
      text: trans.__('HTML render'),
      title: trans.__('The executed notebook as HTML, in a new tab'),
      attrs: { target: '_blank', rel: 'noopener noreferrer' }
    });
    this._links = h('div', { className: 'cd4ml-nb-Links' }, [this._open, this._html, this._mlflow]);
    this._submitError = h('p', { className: 'cd4ml-nb-Error', testid: 'cd4ml-run-error' });
    this._body = h('div', {}, [
      h('div', { className: 'cd4ml-nb-Row' }, [
        h('span', { className: 'cd4ml-nb-Label', text: trans.__('Job') }),
        this._state,
        this._progressText,
        this._cancel
      ]),
      this._bar,
      this._path,
      this._params,
      this._runLine,
      this._error,
      this._metrics,
      this._links,
      this._openError
    ]);
    this.node.append(this._body, this._submitError);
  }

  readonly node: HTMLElement;

  update(): void {
    const trans = this._trans;
    const model = this._model;
    const job = model.job;
    this._submitError.textContent = model.jobError ?? '';
    show(this._submitError, model.jobError !== null);
    show(this.node, job !== null || model.jobError !== null);
    show(this._body, job !== null);
    if (job === null) {
      return;
    }
    if (job.id !== this._shownJobId) {
      this._shownJobId = job.id;
      this._openError.hidden = true;
    }
    const { done, total } = job.progress ?? { done: 0, total: 0 };
    const fraction = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
    const active = !isTerminal(job.state);

    const cancel = model.cancelState;
    // Cancel is acknowledged at once ("cancelling…") and a cancelled job says so, not how it was stopped.
    this._state.textContent =
      cancel === 'cancelling'
        ? trans.__('cancelling…')
        : cancel === 'cancelled'
          ? trans.__('cancelled')
          : this._stateLabels[job.state] ?? job.state;
    this._state.className = `cd4ml-nb-JobState cd4ml-nb-mod-${cancel ?? job.state}`;
    this._state.setAttribute('data-state', job.state);
    this._state.setAttribute('data-job-id', job.id);
    this._progressText.textContent =
      total > 0 ? trans.__('%1 / %2 cells', done, total) : active ? trans.__('starting…') : '';
    show(this._cancel, active);
    this._cancel.disabled = cancel === 'cancelling';

    this._bar.className = `cd4ml-nb-Progress cd4ml-nb-mod-${job.state}`;
    this._bar.setAttribute('aria-valuemax', String(total));
    this._bar.setAttribute('aria-valuenow', String(done));
    this._bar.setAttribute('data-done', String(done));
    this._bar.setAttribute('data-total', String(total));
    this._fill.style.width = `${(fraction * 100).toFixed(1)}%`;

    this._path.textContent = trans.__('Notebook: %1', job.path);
    show(this._path, !samePath(job.path, model.notebookPath));
    const given = formatParams(job.parameters);
    this._params.textContent = given ? trans.__('Parameters: %1', given) : trans.__('Parameters: the notebook defaults');

    this._runId.textContent = job.run_id ?? '';
    show(this._runLine, !!job.run_id);
    this._error.textContent = cancel === 'cancelled' ? '' : job.error ?? '';
    show(this._error, !!job.error && cancel !== 'cancelled');

    const names = Object.keys(job.metrics ?? {}).sort();
    replaceChildren(
      this._metrics,
      names.flatMap(name => [
        h('dt', { text: name }),
        h('dd', {
          text: formatMetric(job.metrics[name]),
          title: String(job.metrics[name]),
          attrs: { 'data-metric': name }
        })
      ])
    );
    show(this._metrics, names.length > 0);

    this._open.title = job.executed ?? '';
    show(this._open, !!job.executed);
    const url = model.mlflowRunUrl(job.experiment, job.run_id);
    if (url) {
      this._mlflow.setAttribute('href', url);
      this._mlflow.title = url;
    } else {
      this._mlflow.removeAttribute('href');
    }
    show(this._mlflow, url !== null);
    const html = model.jobHtmlUrl();
    if (html) {
      this._html.setAttribute('href', html);
    } else {
      this._html.removeAttribute('href');
    }
    show(this._html, html !== null);
    show(this._links, !!job.executed || url !== null || html !== null);
  }

  private _model: IExperimentsModel;
  private _trans: TranslationBundle;
  private _stateLabels: Record<JobState, string>;
  private _state: HTMLElement;
  private _progressText: HTMLElement;
  private _cancel: HTMLButtonElement;
  private _bar: HTMLElement;
  private _fill: HTMLElement;
  private _path: HTMLElement;
  private _params: HTMLElement;
  private _runId: HTMLElement;
  private _runLine: HTMLElement;
  private _error: HTMLElement;
  private _metrics: HTMLElement;
  private _open: HTMLButtonElement;
  private _mlflow: HTMLAnchorElement;
  private _html: HTMLAnchorElement;
  private _openError: HTMLElement;
  private _shownJobId: string | null = null;
  private _links: HTMLElement;
  private _submitError: HTMLElement;
  private _body: HTMLElement;
}
