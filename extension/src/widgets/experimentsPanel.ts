/**
 * The left-sidebar Experiments panel: branch, the active notebook's pairing and
 * parameter form, *Run experiment* (disabled, with the reason beside it, while a value
 * does not fit), the job's progress, and a button to the Experiments dashboard, where
 * the runs are compared (the sidebar is too narrow for their table and charts).
 *
 * Every string from the server is rendered as text (see `components/dom.ts`); the panel's own
 * strings go through `ITranslator` (domain `cd4ml_nb`).
 */
import { TranslationBundle, nullTranslator } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { button, h, replaceChildren } from '../components/dom';
import { JobView } from '../components/jobView';
import { PairingView } from '../components/pairingView';
import { ParameterForm } from '../components/parameterForm';
import { ExperimentsChange, IExperimentsModel } from '../tokens';

/** What the panel asks of the application. */
export interface IExperimentsPanelActions {
  /** Run the notebook as an experiment (the `cd4ml-nb:run` command). */
  run(): void;
  /** Open a server-root-relative path in JupyterLab (rejects when it cannot be opened). */
  openPath(path: string): Promise<unknown>;
  /** Open the Experiments dashboard (the `cd4ml-nb:open-dashboard` command). */
  openDashboard(): void;
}

const PANEL_CLASS = 'cd4ml-nb-Panel';

export class ExperimentsPanel extends Widget {
  constructor(
    model: IExperimentsModel,
    actions: IExperimentsPanelActions,
    trans: TranslationBundle = nullTranslator.load('cd4ml_nb')
  ) {
    super();
    this._model = model;
    this._trans = trans;
    this.addClass(PANEL_CLASS);
    this.node.setAttribute('data-testid', 'cd4ml-experiments-panel');

    this._branch = h('section', { className: 'cd4ml-nb-Section cd4ml-nb-Branch', testid: 'cd4ml-branch-info' });
    this._pairing = new PairingView(model, trans);
    this._form = new ParameterForm(model, () => actions.run(), trans);
    this._runButton = button(trans.__('Run experiment'), () => actions.run(), {
      testid: 'cd4ml-run-button',
      title: trans.__('Run the saved notebook with these parameters as a tracked MLflow run on this branch')
    });
    this._runButton.classList.add('jp-mod-accept', 'cd4ml-nb-RunButton');
    this._resetButton = button(trans.__('Reset'), () => model.resetValues(), {
      testid: 'cd4ml-reset-button',
      title: trans.__('Put every parameter back to the notebook default')
    });
    this._unsaved = h('p', {
      className: 'cd4ml-nb-Hint cd4ml-nb-Unsaved',
      testid: 'cd4ml-unsaved',
      text: trans.__('The notebook has unsaved changes: a run reads the saved file.')
    });
    this._blocked = h('span', {
      className: 'cd4ml-nb-Blocked',
      testid: 'cd4ml-run-blocked',
      attrs: { role: 'status', 'aria-live': 'polite' }
    });
    this._actions = h('div', { className: 'cd4ml-nb-Section cd4ml-nb-ActionsSection' }, [
      h('div', { className: 'cd4ml-nb-Actions' }, [this._runButton, this._resetButton, this._blocked]),
      this._unsaved
    ]);
    this._executedNote = h('p', {
      className: 'cd4ml-nb-Hint',
      testid: 'cd4ml-executed-copy',
      text: trans.__('Executed copy of a run: it is read-only here. Open its source notebook to run it again.')
    });
    this._job = new JobView(model, { openPath: path => actions.openPath(path) }, trans);

    this._refresh = button('↻', () => void model.refreshRuns(), {
      testid: 'cd4ml-runs-refresh',
      title: trans.__('Read the runs again')
    });
    this._runsStatus = h('div', { className: 'cd4ml-nb-RunsStatus' });
    // The runs table and charts need the width of the main area: the dashboard shows them.
    this._dashboardButton = button(trans.__('Open Experiments Dashboard'), () => actions.openDashboard(), {
      testid: 'cd4ml-open-dashboard',
      title: trans.__('Runs of this branch beside the base branch: table, charts, comparison')
    });
    this._dashboardButton.classList.add('jp-mod-accept');
    this._runs = h('section', { className: 'cd4ml-nb-Section cd4ml-nb-Runs', testid: 'cd4ml-runs' }, [
      h('div', { className: 'cd4ml-nb-Row' }, [h('h3', { className: 'cd4ml-nb-Heading', text: trans.__('Runs') }), this._refresh]),
      this._runsStatus,
      this._dashboardButton
    ]);

    this.node.append(
      h('header', { className: 'cd4ml-nb-Header' }, [h('h2', { text: trans.__('Experiments') })]),
      this._branch,
      this._executedNote,
      this._pairing.node,
      this._form.node,
      this._actions,
      this._job.node,
      this._runs
    );
    model.changed.connect(this._onChange, this);
    this._renderAll();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model.changed.disconnect(this._onChange, this);
    super.dispose();
  }

  private _onChange(_: IExperimentsModel, change: ExperimentsChange): void {
    switch (change) {
      case 'status':
        this._renderBranch();
        this._job.update();
        this._renderRuns();
        break;
      case 'notebook':
        this._renderAll();
        break;
      case 'pairing':
        this._pairing.update();
        break;
      case 'params':
        this._form.render();
        this._renderActions();
        break;
      case 'form':
        this._form.update();
        this._renderActions();
        break;
      case 'job':
        this._job.update();
        this._renderActions();
        break;
      case 'dirty':
        this._renderActions();
        this._pairing.update();
        break;
      case 'runs':
      case 'metric':
        this._renderRuns();
        break;
    }
  }

  private _renderAll(): void {
    this._renderBranch();
    this._pairing.update();
    this._form.render();
    this._renderActions();
    this._job.update();
    this._renderRuns();
  }

  private _renderBranch(): void {
    const trans = this._trans;
    const status = this._model.status;
    if (status === null) {
      replaceChildren(this._branch, [
        this._model.statusError
          ? h('p', { className: 'cd4ml-nb-Error', testid: 'cd4ml-status-error', text: this._model.statusError })
          : h('p', { className: 'cd4ml-nb-Hint', text: trans.__('Reading the branch…') })
      ]);
      return;
    }
    this._branch.title = [
      trans.__('Tracking URI: %1', status.tracking_uri),
      this._model.mlflowUiUrl() ? trans.__('MLflow UI: %1', this._model.mlflowUiUrl() ?? '') : '',
      `cd4ml_nb ${status.version}`
    ]
      .filter(Boolean)
      .join('\n');
    replaceChildren(this._branch, [
      h('div', { className: 'cd4ml-nb-Row' }, [
        h('span', { className: 'cd4ml-nb-Label', text: trans.__('Branch') }),
        h('span', { className: 'cd4ml-nb-Swatch cd4ml-nb-mod-current' }),
        h('span', {
          className: 'cd4ml-nb-BranchName',
          testid: 'cd4ml-branch',
          text: status.branch ?? trans.__('no git repository')
        })
      ]),
      h('div', { className: 'cd4ml-nb-Row' }, [
        h('span', { className: 'cd4ml-nb-Label', text: trans.__('Base') }),
        h('span', { className: 'cd4ml-nb-Swatch cd4ml-nb-mod-base' }),
        h('span', { className: 'cd4ml-nb-BranchName', testid: 'cd4ml-base-branch', text: status.base_branch })
      ])
    ]);
  }

  private _renderActions(): void {
    const trans = this._trans;
    const model = this._model;
    const noNotebook = model.notebookPath === null;
    const executed = model.executedCopy;
    this._actions.hidden = noNotebook || executed;
    this._executedNote.hidden = !executed;
    this._pairing.node.hidden = executed;
    this._form.node.hidden = executed;
    const blocked = model.runBlocked;
    this._runButton.disabled = noNotebook || model.submitting || model.jobActive || blocked !== null;
    this._blocked.textContent = blocked ?? '';
    this._blocked.hidden = blocked === null;
    this._runButton.title = blocked ?? trans.__('Run the saved notebook with these parameters as a tracked MLflow run on this branch');
    this._runButton.textContent = model.submitting
      ? trans.__('Starting…')
      : model.jobActive
        ? trans.__('Running…')
        : trans.__('Run experiment');
    this._resetButton.hidden = model.fields.length === 0;
    this._unsaved.hidden = !model.notebookDirty;
  }

  private _renderRuns(): void {
    const trans = this._trans;
    const model = this._model;
    this._runs.hidden = model.notebookPath === null;
    if (model.notebookPath === null) {
      return;
    }
    this._refresh.disabled = model.runsLoading;

    const problems = model.runs
      .filter(section => section.error)
      .map(section => `${section.branch ?? trans.__('this branch')}: ${section.error}`);
    replaceChildren(this._runsStatus, [
      model.runsLoading ? h('span', { className: 'cd4ml-nb-Hint', text: trans.__('Loading runs…') }) : null,
      ...problems.map(text => h('p', { className: 'cd4ml-nb-Error', testid: 'cd4ml-runs-error', text }))
    ]);
    const counts = model.runs.map(
      section =>
        trans.__('%1 on %2', `${section.runs.length}${section.nextPageToken ? '+' : ''}`, section.branch ?? trans.__('this branch'))
    );
    this._runsCount.textContent = counts.length ? trans.__('Runs of this notebook: %1', counts.join(', ')) : '';
    this._runsStatus.append(this._runsCount);
  }

  private _model: IExperimentsModel;
  private _trans: TranslationBundle;
  private _branch: HTMLElement;
  private _pairing: PairingView;
  private _form: ParameterForm;
  private _runButton: HTMLButtonElement;
  private _resetButton: HTMLButtonElement;
  private _actions: HTMLElement;
  private _unsaved: HTMLElement;
  private _job: JobView;
  private _refresh: HTMLButtonElement;
  private _runsStatus: HTMLElement;
  private _runs: HTMLElement;
  private _blocked: HTMLElement;
  private _executedNote: HTMLElement;
  private _dashboardButton: HTMLButtonElement;
  private _runsCount = h('p', { className: 'cd4ml-nb-Hint', testid: 'cd4ml-runs-count' });
}
