/**
 * The left-sidebar Experiments panel: branch, the active notebook's pairing and
 * parameter form, *Run experiment* (disabled, with the reason beside it, while a value
 * does not fit), the job's progress, the latest runs (kind, status, why one failed), and a
 * button to the Experiments dashboard, where the runs are compared (the sidebar is too narrow
 * for their table and charts).
 *
 * Rendered with React (`ReactWidget`): every string from the server is rendered as text;
 * the panel's own strings go through `ITranslator` (domain `cd4ml_nb`).
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { clickHandler } from '../components/clicks';
import { JobView } from '../components/jobView';
import { KindBadge, RunFailure } from '../components/runKind';
import { PairingView } from '../components/pairingView';
import { ParameterForm } from '../components/parameterForm';
import { shortRunId } from '../dashboard/charts';
import { IExperimentsModel } from '../tokens';
import { ModelView } from './modelView';

/** Runs of this branch the panel lists, newest first (the dashboard lists them all). */
export const LATEST_RUNS = 3;

/** What the panel asks of the application. */
export interface IExperimentsPanelActions {
  /** Run the notebook as an experiment (the `cd4ml-nb:run` command). */
  run(): void;
  /** Open a server-root-relative path in JupyterLab (rejects when it cannot be opened). */
  openPath(path: string): Promise<unknown>;
  /** Open the Experiments dashboard (the `cd4ml-nb:open-dashboard` command). */
  openDashboard(): void;
}

interface IProps {
  model: IExperimentsModel;
  actions: IExperimentsPanelActions;
  trans: TranslationBundle;
}

function BranchInfo(props: IProps): JSX.Element {
  const { model, trans } = props;
  const status = model.status;
  if (status === null) {
    return (
      <section className="cd4ml-nb-Section cd4ml-nb-Branch" data-testid="cd4ml-branch-info">
        {model.statusError ? (
          <p className="cd4ml-nb-Error" data-testid="cd4ml-status-error">
            {model.statusError}
          </p>
        ) : (
          <p className="cd4ml-nb-Hint">{trans.__('Reading the branch…')}</p>
        )}
      </section>
    );
  }
  const ui = model.mlflowUiUrl();
  const title = [
    trans.__('Tracking URI: %1', status.tracking_uri),
    ui ? trans.__('MLflow UI: %1', ui) : '',
    `cd4ml_nb ${status.version}`
  ]
    .filter(Boolean)
    .join('\n');
  return (
    <section className="cd4ml-nb-Section cd4ml-nb-Branch" data-testid="cd4ml-branch-info" title={title}>
      <div className="cd4ml-nb-Row">
        <span className="cd4ml-nb-Label">{trans.__('Branch')}</span>
        <span className="cd4ml-nb-Swatch cd4ml-nb-mod-current" />
        <span className="cd4ml-nb-BranchName" data-testid="cd4ml-branch">
          {status.branch ?? trans.__('no git repository')}
        </span>
      </div>
      <div className="cd4ml-nb-Row">
        <span className="cd4ml-nb-Label">{trans.__('Base')}</span>
        <span className="cd4ml-nb-Swatch cd4ml-nb-mod-base" />
        <span className="cd4ml-nb-BranchName" data-testid="cd4ml-base-branch">
          {status.base_branch}
        </span>
      </div>
    </section>
  );
}

function RunActions(props: IProps): JSX.Element {
  const { model, actions, trans } = props;
  const noNotebook = model.notebookPath === null;
  const blocked = model.runBlocked;
  const runTitle = trans.__('Run the saved notebook with these parameters as a tracked MLflow run on this branch');
  return (
    <div className="cd4ml-nb-Section cd4ml-nb-ActionsSection" hidden={noNotebook || model.executedCopy}>
      <div className="cd4ml-nb-Actions">
        <Button
          type="button"
          className="cd4ml-nb-Button jp-mod-accept cd4ml-nb-RunButton"
          data-testid="cd4ml-run-button"
          title={blocked ?? runTitle}
          disabled={noNotebook || model.submitting || model.jobActive || blocked !== null}
          onClick={clickHandler(() => actions.run())}
        >
          {model.submitting ? trans.__('Starting…') : model.jobActive ? trans.__('Running…') : trans.__('Run experiment')}
        </Button>
        <Button
          type="button"
          className="cd4ml-nb-Button"
          data-testid="cd4ml-reset-button"
          title={trans.__('Put every parameter back to the notebook default')}
          hidden={model.fields.length === 0}
          onClick={clickHandler(() => model.resetValues())}
        >
          {trans.__('Reset')}
        </Button>
        <span
          className="cd4ml-nb-Blocked"
          data-testid="cd4ml-run-blocked"
          role="status"
          aria-live="polite"
          hidden={blocked === null}
        >
          {blocked ?? ''}
        </span>
      </div>
      <p className="cd4ml-nb-Hint cd4ml-nb-Unsaved" data-testid="cd4ml-unsaved" hidden={!model.notebookDirty}>
        {trans.__('The notebook has unsaved changes: a run reads the saved file.')}
      </p>
    </div>
  );
}

/** The newest runs of this notebook on this branch: id, kind, status and why one failed. */
function LatestRuns(props: IProps): JSX.Element | null {
  const { model, trans } = props;
  const latest = model.runs.find(section => section.side === 'current')?.runs.slice(0, LATEST_RUNS) ?? [];
  if (!latest.length) {
    return null;
  }
  return (
    <ul
      className="cd4ml-nb-LatestRuns"
      data-testid="cd4ml-latest-runs"
      aria-label={trans.__('Latest runs on this branch')}
      style={{ listStyle: 'none', margin: '4px 0', padding: 0 }}
    >
      {latest.map(run => (
        <li key={run.run_id} data-run-id={run.run_id} data-status={run.status} style={{ margin: '2px 0' }}>
          <span className="cd4ml-nb-RunId" title={run.run_id}>
            {shortRunId(run.run_id)}
          </span>{' '}
          <KindBadge run={run} trans={trans} /> <span className="cd4ml-nb-RunStatus">{run.status}</span>
          <RunFailure run={run} trans={trans} />
        </li>
      ))}
    </ul>
  );
}

function RunsSummary(props: IProps): JSX.Element {
  const { model, actions, trans } = props;
  const problems = model.runs
    .filter(section => section.error)
    .map(section => `${section.branch ?? trans.__('this branch')}: ${section.error}`);
  const counts = model.runs.map(section =>
    trans.__(
      '%1 on %2',
      `${section.runs.length}${section.nextPageToken ? '+' : ''}`,
      section.branch ?? trans.__('this branch')
    )
  );
  return (
    <section className="cd4ml-nb-Section cd4ml-nb-Runs" data-testid="cd4ml-runs" hidden={model.notebookPath === null}>
      <div className="cd4ml-nb-Row">
        <h3 className="cd4ml-nb-Heading">{trans.__('Runs')}</h3>
        <Button
          type="button"
          className="cd4ml-nb-Button"
          data-testid="cd4ml-runs-refresh"
          title={trans.__('Read the runs again')}
          disabled={model.runsLoading}
          onClick={clickHandler(() => void model.refreshRuns())}
        >
          ↻
        </Button>
      </div>
      <div className="cd4ml-nb-RunsStatus">
        {model.runsLoading ? <span className="cd4ml-nb-Hint">{trans.__('Loading runs…')}</span> : null}
        {problems.map((text, index) => (
          <p key={index} className="cd4ml-nb-Error" data-testid="cd4ml-runs-error">
            {text}
          </p>
        ))}
        <p className="cd4ml-nb-Hint" data-testid="cd4ml-runs-count">
          {counts.length ? trans.__('Runs of this notebook: %1', counts.join(', ')) : ''}
        </p>
      </div>
      <LatestRuns {...props} />
      {/* The runs table and charts need the width of the main area: the dashboard shows them. */}
      <Button
        type="button"
        className="cd4ml-nb-Button jp-mod-accept"
        data-testid="cd4ml-open-dashboard"
        title={trans.__('Runs of this branch beside the base branch: table, charts, comparison')}
        onClick={clickHandler(() => actions.openDashboard())}
      >
        {trans.__('Open Experiments Dashboard')}
      </Button>
    </section>
  );
}

function Panel(props: IProps): JSX.Element {
  const { model, actions, trans } = props;
  const executed = model.executedCopy;
  return (
    <>
      <header className="cd4ml-nb-Header">
        <h2>{trans.__('Experiments')}</h2>
      </header>
      <BranchInfo {...props} />
      <p className="cd4ml-nb-Hint" data-testid="cd4ml-executed-copy" hidden={!executed}>
        {trans.__('Executed copy of a run: it is read-only here. Open its source notebook to run it again.')}
      </p>
      <PairingView model={model} trans={trans} hidden={executed} />
      <ParameterForm model={model} trans={trans} onSubmit={() => actions.run()} hidden={executed} />
      <RunActions {...props} />
      <JobView model={model} trans={trans} actions={{ openPath: path => actions.openPath(path) }} />
      <RunsSummary {...props} />
    </>
  );
}

export class ExperimentsPanel extends ModelView<IExperimentsModel> {
  constructor(model: IExperimentsModel, private readonly _actions: IExperimentsPanelActions, trans?: TranslationBundle) {
    super(model, trans, 'cd4ml-nb-Panel');
    this.node.setAttribute('data-testid', 'cd4ml-experiments-panel');
  }

  render(): JSX.Element {
    return <Panel model={this.model} actions={this._actions} trans={this.trans} />;
  }
}
