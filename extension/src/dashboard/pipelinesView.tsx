/**
 * The Pipelines view: start `pipeline run` with an override, follow or cancel it, and the
 * branch's pipeline runs with their steps (status, cache hit, duration). Every string from the
 * server is rendered as text.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { formatMetric, formatShortTime, formatTime } from '../runs';
import { isTerminal } from '../tokens';
import { ModelView, ViewHeader } from '../widgets/modelView';
import { shortRunId } from './charts';
import { formatSeconds, IPipelineRun, IPipelineStep, overrideChoices, PipelinesModel } from './pipelines';

interface IProps {
  model: PipelinesModel;
  trans: TranslationBundle;
}

function StartForm({ model, trans }: IProps): JSX.Element {
  const [target, setTarget] = React.useState('');
  const [value, setValue] = React.useState('');
  const [force, setForce] = React.useState(false);
  const choices = overrideChoices(model.file);
  const current = choices.find(c => c.target === target);
  const job = model.job;
  const busy = model.starting || (job !== null && !isTerminal(job.state));
  const start = () => {
    const overrides: Record<string, string> = target && value !== '' ? { [target]: value } : {};
    void model.start({ overrides, force });
  };
  return (
    <section className="cd4ml-nb-PipelineStart" data-testid="cd4ml-pipeline-start-form">
      <div className="cd4ml-nb-Row">
        <span>
          {trans.__('Pipeline file')}{' '}
          <code data-testid="cd4ml-pipeline-file">{model.file?.file ?? ''}</code>
        </span>
        <label>
          {trans.__('Override')}
          <select data-testid="cd4ml-pipeline-override-name" value={target} onChange={e => setTarget(e.target.value)}>
            <option value="">{trans.__('(none)')}</option>
            {choices.map(c => (
              <option key={c.target} value={c.target}>{c.target}</option>
            ))}
          </select>
        </label>
        <label>
          {trans.__('Value')}
          <input
            data-testid="cd4ml-pipeline-override-value"
            value={value}
            disabled={!target}
            placeholder={current ? current.value : ''}
            onChange={e => setValue(e.target.value)}
          />
        </label>
        <label title={trans.__('Execute every step, cache or not')}>
          <input type="checkbox" data-testid="cd4ml-pipeline-force" checked={force} onChange={e => setForce(e.target.checked)} />
          {trans.__('force')}
        </label>
        <button
          className="jp-Button jp-mod-styled jp-mod-accept"
          data-testid="cd4ml-pipeline-start"
          disabled={busy || !model.file}
          onClick={start}
        >
          {model.starting ? trans.__('Starting…') : trans.__('Run pipeline')}
        </button>
      </div>
      {model.fileError ? (
        <p className="cd4ml-nb-Hint" data-testid="cd4ml-pipeline-file-error">{model.fileError}</p>
      ) : null}
      {model.jobError ? (
        <p className="cd4ml-nb-Error" data-testid="cd4ml-pipeline-start-error">{model.jobError}</p>
      ) : null}
      <JobState {...{ model, trans }} />
    </section>
  );
}

function JobState({ model, trans }: IProps): JSX.Element | null {
  const job = model.job;
  if (!job) {
    return null;
  }
  const ended = isTerminal(job.state);
  const label = !ended && model.cancelling ? trans.__('cancelling…') : job.state;
  const { done, total } = job.progress ?? { done: 0, total: 0 };
  return (
    <div className="cd4ml-nb-Row cd4ml-nb-PipelineJob" data-testid="cd4ml-pipeline-job">
      <span data-testid="cd4ml-pipeline-job-state" data-state={job.state}>{label}</span>
      <span data-testid="cd4ml-pipeline-job-progress" data-done={done} data-total={total}>
        {trans.__('%1 of %2 steps ended', done, total)}
      </span>
      {Object.keys(job.parameters ?? {}).length ? (
        <span data-testid="cd4ml-pipeline-job-overrides">
          {Object.entries(job.parameters).map(([k, v]) => `${k}=${String(v)}`).join(', ')}
        </span>
      ) : null}
      {ended ? null : (
        <button
          className="jp-Button jp-mod-styled jp-mod-warn"
          data-testid="cd4ml-pipeline-cancel"
          disabled={model.cancelling}
          onClick={() => void model.cancel()}
        >
          {trans.__('Cancel')}
        </button>
      )}
      {job.error ? <span className="cd4ml-nb-Error" data-testid="cd4ml-pipeline-job-error">{job.error}</span> : null}
    </div>
  );
}

function StepRow({ step, trans }: { step: IPipelineStep; trans: TranslationBundle }): JSX.Element {
  const metrics = Object.entries(step.metrics ?? {})
    .map(([k, v]) => `${k}=${formatMetric(v)}`)
    .join(', ');
  return (
    <tr data-testid={`cd4ml-pipeline-step-${step.step}`} data-status={step.status} data-cache-hit={step.cache_hit ?? ''}>
      <td>{step.step}</td>
      <td data-status={step.status}>{step.status}</td>
      <td>
        {step.cache_hit ? (
          <span className="cd4ml-nb-CacheHit" title={trans.__('No kernel started: the outputs of run %1 stand', step.cache_hit)}>
            {trans.__('cache hit of %1', shortRunId(step.cache_hit))}
          </span>
        ) : step.run_id && step.status !== 'SKIPPED' ? (
          trans.__('executed')
        ) : (
          ''
        )}
      </td>
      <td className="cd4ml-nb-Number" data-testid="cd4ml-pipeline-step-duration">{formatSeconds(step.seconds)}</td>
      <td title={step.notebook ?? ''}>{step.notebook ?? ''}</td>
      <td title={step.run_id ?? ''}>{step.run_id ? shortRunId(step.run_id) : ''}</td>
      <td>{metrics}</td>
      <td className="cd4ml-nb-Error">{step.error ?? ''}</td>
    </tr>
  );
}

function PipelineRun({ run, trans }: { run: IPipelineRun; trans: TranslationBundle }): JSX.Element {
  const c = run.counts ?? {};
  return (
    <section className="cd4ml-nb-PipelineRun" data-testid="cd4ml-pipeline-run" data-run-id={run.run_id} data-status={run.status}>
      <header className="cd4ml-nb-Row">
        <strong data-testid="cd4ml-pipeline-run-status">{run.status}</strong>
        <span title={formatTime(run.start_time)}>{formatShortTime(run.start_time)}</span>
        <span title={run.run_id}>{shortRunId(run.run_id)}</span>
        <span>{run.file ?? ''}</span>
        <span>{formatSeconds(run.seconds)}</span>
        {c.executed !== undefined ? (
          <span data-testid="cd4ml-pipeline-run-counts">
            {trans.__('%1 executed, %2 cache hits, %3 failed, %4 skipped', c.executed, c.cache_hits ?? 0, c.failed ?? 0, c.skipped ?? 0)}
          </span>
        ) : null}
      </header>
      <table className="cd4ml-nb-DashboardTable cd4ml-nb-PipelineSteps">
        <thead>
          <tr>
            <th>{trans.__('Step')}</th>
            <th>{trans.__('Status')}</th>
            <th>{trans.__('Cache')}</th>
            <th>{trans.__('Duration')}</th>
            <th>{trans.__('Notebook')}</th>
            <th>{trans.__('Run')}</th>
            <th>{trans.__('Metrics')}</th>
            <th>{trans.__('Error')}</th>
          </tr>
        </thead>
        <tbody>
          {run.steps.map(step => (
            <StepRow key={step.step} step={step} trans={trans} />
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Pipelines(props: IProps): JSX.Element {
  const { model, trans } = props;
  return (
    <div className="cd4ml-nb-Dashboard cd4ml-nb-Pipelines" data-testid="cd4ml-pipelines">
      <ViewHeader model={model} trans={trans} title={trans.__('Pipelines')} reading={trans.__('Reading pipeline runs…')} />
      <StartForm {...props} />
      {model.error ? <p className="cd4ml-nb-Error" data-testid="cd4ml-pipelines-error">{model.error}</p> : null}
      {model.pipelines.length === 0 && !model.loading ? (
        <p className="cd4ml-nb-Hint" data-testid="cd4ml-pipelines-empty">{trans.__('No pipeline runs on this branch yet.')}</p>
      ) : null}
      <div className="cd4ml-nb-DashboardTableScroll">
        {model.pipelines.map(run => (
          <PipelineRun key={run.run_id} run={run} trans={trans} />
        ))}
      </div>
    </div>
  );
}

/** The Pipelines widget (wrap it in a `MainAreaWidget`). */
export class PipelinesView extends ModelView<PipelinesModel> {
  render(): JSX.Element {
    return <Pipelines model={this.model} trans={this.trans} />;
  }
}
