/**
 * The left-sidebar Experiments panel: branch, the active notebook's pairing and
 * parameter form, *Run experiment* (disabled, with the reason beside it, while a value
 * does not fit), the job's progress, and a button to the Experiments dashboard, where
 * the runs are compared (the sidebar is too narrow for their table and charts).
 *
 * Every string from the server is rendered as text (see `components/dom.ts`).
 */
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
  constructor(model: IExperimentsModel, actions: IExperimentsPanelActions) {
    super();
    this._model = model;
    this.addClass(PANEL_CLASS);
    this.node.setAttribute('data-testid', 'cd4ml-experiments-panel');

    this._branch = h('section', { className: 'cd4ml-nb-Section cd4ml-nb-Branch', testid: 'cd4ml-branch-info' });
    this._pairing = new PairingView(model);
    this._form = new ParameterForm(model, () => actions.run());
    this._runButton = button('Run experiment', () => actions.run(), {
      testid: 'cd4ml-run-button',
      title: 'Run the saved notebook with these parameters as a tracked MLflow run on this branch'
    });
    this._runButton.classList.add('jp-mod-accept', 'cd4ml-nb-RunButton');
    this._resetButton = button('Reset', () => model.resetValues(), {
      testid: 'cd4ml-reset-button',
      title: 'Put every parameter back to the notebook default'
    });
    this._unsaved = h('p', {
      className: 'cd4ml-nb-Hint cd4ml-nb-Unsaved',
      testid: 'cd4ml-unsaved',
      text: 'The notebook has unsaved changes: a run reads the saved file.'
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
      text: 'Executed copy of a run: it is read-only here. Open its source notebook to run it again.'
    });
    this._job = new JobView(model, { openPath: path => actions.openPath(path) });

    this._refresh = button('↻', () => void model.refreshRuns(), {
      testid: 'cd4ml-runs-refresh',
      title: 'Read the runs again'
    });
    this._runsStatus = h('div', { className: 'cd4ml-nb-RunsStatus' });
    // The runs table and charts need the width of the main area: the dashboard shows them.
    this._dashboardButton = button('Open Experiments Dashboard', () => actions.openDashboard(), {
      testid: 'cd4ml-open-dashboard',
      title: 'Runs of this branch beside the base branch: table, charts, comparison'
    });
    this._dashboardButton.classList.add('jp-mod-accept');
    this._runs = h('section', { className: 'cd4ml-nb-Section cd4ml-nb-Runs', testid: 'cd4ml-runs' }, [
      h('div', { className: 'cd4ml-nb-Row' }, [h('h3', { className: 'cd4ml-nb-Heading', text: 'Runs' }), this._refresh]),
      this._runsStatus,
      this._dashboardButton
    ]);

    this.node.append(
      h('header', { className: 'cd4ml-nb-Header' }, [h('h2', { text: 'Experiments' })]),
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
    const status = this._model.status;
    if (status === null) {
      replaceChildren(this._branch, [
        this._model.statusError
          ? h('p', { className: 'cd4ml-nb-Error', testid: 'cd4ml-status-error', text: this._model.statusError })
          : h('p', { className: 'cd4ml-nb-Hint', text: 'Reading the branch…' })
      ]);
      return;
    }
    this._branch.title = [
      `Tracking URI: ${status.tracking_uri}`,
      status.mlflow_ui_url ? `MLflow UI: ${status.mlflow_ui_url}` : '',
      `cd4ml_nb ${status.version}`
    ]
      .filter(Boolean)
      .join('\n');
    replaceChildren(this._branch, [
      h('div', { className: 'cd4ml-nb-Row' }, [
        h('span', { className: 'cd4ml-nb-Label', text: 'Branch' }),
        h('span', { className: 'cd4ml-nb-Swatch cd4ml-nb-mod-current' }),
        h('span', {
          className: 'cd4ml-nb-BranchName',
          testid: 'cd4ml-branch',
          text: status.branch ?? 'no git repository'
        })
      ]),
      h('div', { className: 'cd4ml-nb-Row' }, [
        h('span', { className: 'cd4ml-nb-Label', text: 'Base' }),
        h('span', { className: 'cd4ml-nb-Swatch cd4ml-nb-mod-base' }),
        h('span', { className: 'cd4ml-nb-BranchName', testid: 'cd4ml-base-branch', text: status.base_branch })
      ])
    ]);
  }

  private _renderActions(): void {
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
    this._runButton.title = blocked ?? 'Run the saved notebook with these parameters as a tracked MLflow run on this branch';
    this._runButton.textContent = model.submitting
      ? 'Starting…'
      : model.jobActive
        ? 'Running…'
        : 'Run experiment';
    this._resetButton.hidden = model.fields.length === 0;
    this._unsaved.hidden = !model.notebookDirty;
  }

  private _renderRuns(): void {
    const model = this._model;
    this._runs.hidden = model.notebookPath === null;
    if (model.notebookPath === null) {
      return;
    }
    this._refresh.disabled = model.runsLoading;

    const problems = model.runs
      .filter(section => section.error)
      .map(section => `${section.branch ?? 'this branch'}: ${section.error}`);
    replaceChildren(this._runsStatus, [
      model.runsLoading ? h('span', { className: 'cd4ml-nb-Hint', text: 'Loading runs…' }) : null,
      ...problems.map(text => h('p', { className: 'cd4ml-nb-Error', testid: 'cd4ml-runs-error', text }))
    ]);
    const counts = model.runs.map(
      section => `${section.runs.length}${section.nextPageToken ? '+' : ''} on ${section.branch ?? 'this branch'}`
    );
    this._runsCount.textContent = counts.length ? `Runs of this notebook: ${counts.join(', ')}` : '';
    this._runsStatus.append(this._runsCount);
  }

  private _model: IExperimentsModel;
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
