/**
 * The job being run: its state, a progress bar over the cells, *Cancel*, and once it
 * has ended its metrics, error and links to the executed notebook and the MLflow run.
 *
 * React keeps the nodes across renders: the job is polled every second and a click on
 * *Cancel* must not land on a node that was just replaced.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { clickHandler, NewTabLink } from './clicks';
import { samePath } from '../paths';
import { errorMessage } from '../request';
import { formatMetric, formatParams } from '../runs';
import { IExperimentsModel, JobState, isTerminal } from '../tokens';

/** What the view asks of the application. */
export interface IJobViewActions {
  /** Open a server-root-relative path in JupyterLab (rejects when it cannot be opened). */
  openPath(path: string): Promise<unknown>;
}

/** Props of {@link JobView}. */
export interface IJobViewProps {
  model: IExperimentsModel;
  actions: IJobViewActions;
  trans: TranslationBundle;
}

function stateLabel(state: JobState, trans: TranslationBundle): string {
  const labels: Record<JobState, string> = {
    queued: trans.__('queued'),
    running: trans.__('running'),
    finished: trans.__('finished'),
    failed: trans.__('failed'),
    killed: trans.__('killed')
  };
  return labels[state] ?? state;
}

/** The job section of the panel (hidden while there is no job and no job error). */
export function JobView(props: IJobViewProps): JSX.Element {
  const { model, actions, trans } = props;
  const job = model.job;
  // Why the executed notebook of a job could not be opened (forgotten when another job is shown).
  const [openError, setOpenError] = React.useState<{ jobId: string; text: string } | null>(null);
  const jobError = model.jobError;

  let body: JSX.Element | null = null;
  if (job !== null) {
    const { done, total } = job.progress ?? { done: 0, total: 0 };
    const fraction = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
    const active = !isTerminal(job.state);
    const cancel = model.cancelState;
    // Cancel is acknowledged at once ("cancelling…") and a cancelled job says so, not how it was stopped.
    const state =
      cancel === 'cancelling'
        ? trans.__('cancelling…')
        : cancel === 'cancelled'
          ? trans.__('cancelled')
          : stateLabel(job.state, trans);
    const given = formatParams(job.parameters);
    const names = Object.keys(job.metrics ?? {}).sort();
    const mlflowUrl = model.mlflowRunUrl(job.experiment, job.run_id);
    const htmlUrl = model.jobHtmlUrl();
    const executed = job.executed;
    const openExecuted = () => {
      if (!executed) {
        return;
      }
      const jobId = job.id;
      setOpenError(null);
      actions.openPath(executed).catch(reason => {
        setOpenError({
          jobId,
          text:
            trans.__('Could not open %1: %2', executed, errorMessage(reason)) +
            (executed.split('/').some(part => part.startsWith('.'))
              ? trans.__(
                  ' (it is in a hidden folder: use the HTML render, or start Jupyter with --ContentsManager.allow_hidden=True)'
                )
              : '')
        });
      });
    };
    const shownOpenError = openError !== null && openError.jobId === job.id ? openError.text : null;
    body = (
      <div>
        <div className="cd4ml-nb-Row">
          <span className="cd4ml-nb-Label">{trans.__('Job')}</span>
          <span
            className={`cd4ml-nb-JobState cd4ml-nb-mod-${cancel ?? job.state}`}
            data-testid="cd4ml-job-state"
            data-state={job.state}
            data-job-id={job.id}
          >
            {state}
          </span>
          <span className="cd4ml-nb-ProgressText" data-testid="cd4ml-progress-text">
            {total > 0 ? trans.__('%1 / %2 cells', done, total) : active ? trans.__('starting…') : ''}
          </span>
          <Button
            type="button"
            className="cd4ml-nb-Button"
            data-testid="cd4ml-cancel-button"
            title={trans.__('Stop the kernel; the run ends KILLED')}
            hidden={!active}
            disabled={cancel === 'cancelling'}
            onClick={clickHandler(() => void model.cancel())}
          >
            {trans.__('Cancel')}
          </Button>
        </div>
        <div
          className={`cd4ml-nb-Progress cd4ml-nb-mod-${job.state}`}
          data-testid="cd4ml-progress"
          role="progressbar"
          aria-valuemin={0}
          aria-valuemax={total}
          aria-valuenow={done}
          aria-label={trans.__('Cells executed')}
          data-done={done}
          data-total={total}
        >
          <div className="cd4ml-nb-ProgressFill" style={{ width: `${(fraction * 100).toFixed(1)}%` }} />
        </div>
        <div className="cd4ml-nb-Hint" hidden={samePath(job.path, model.notebookPath)}>
          {trans.__('Notebook: %1', job.path)}
        </div>
        <div className="cd4ml-nb-Hint" data-testid="cd4ml-job-params">
          {given ? trans.__('Parameters: %1', given) : trans.__('Parameters: the notebook defaults')}
        </div>
        <div className="cd4ml-nb-Hint" hidden={!job.run_id}>
          {trans.__('MLflow run ')}
          <code data-testid="cd4ml-job-run-id">{job.run_id ?? ''}</code>
        </div>
        <pre className="cd4ml-nb-Error" data-testid="cd4ml-job-error" hidden={!job.error || cancel === 'cancelled'}>
          {cancel === 'cancelled' ? '' : job.error ?? ''}
        </pre>
        <dl className="cd4ml-nb-Metrics" data-testid="cd4ml-job-metrics" hidden={names.length === 0}>
          {names.map(name => (
            <React.Fragment key={name}>
              <dt>{name}</dt>
              <dd title={String(job.metrics[name])} data-metric={name}>
                {formatMetric(job.metrics[name])}
              </dd>
            </React.Fragment>
          ))}
        </dl>
        <div className="cd4ml-nb-Links" hidden={!executed && mlflowUrl === null && htmlUrl === null}>
          <Button
            type="button"
            className="cd4ml-nb-Button"
            data-testid="cd4ml-open-executed"
            title={executed ?? ''}
            hidden={!executed}
            onClick={clickHandler(openExecuted)}
          >
            {trans.__('Open executed notebook')}
          </Button>
          <NewTabLink
            testid="cd4ml-html-link"
            title={trans.__('The executed notebook as HTML, in a new tab')}
            href={htmlUrl}
          >
            {trans.__('HTML render')}
          </NewTabLink>
          <NewTabLink testid="cd4ml-mlflow-link" title={mlflowUrl ?? undefined} href={mlflowUrl}>
            {trans.__('Open in MLflow')}
          </NewTabLink>
        </div>
        <p className="cd4ml-nb-Error cd4ml-nb-OpenError" data-testid="cd4ml-open-error" hidden={shownOpenError === null}>
          {shownOpenError ?? ''}
        </p>
      </div>
    );
  }
  return (
    <section
      className="cd4ml-nb-Section cd4ml-nb-Job"
      data-testid="cd4ml-job"
      hidden={job === null && jobError === null}
    >
      {body}
      <p className="cd4ml-nb-Error" data-testid="cd4ml-run-error" hidden={jobError === null}>
        {jobError ?? ''}
      </p>
    </section>
  );
}
