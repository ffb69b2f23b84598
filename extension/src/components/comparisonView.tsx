/**
 * The comparison of the runs selected in the dashboard: the gate's verdict, each metric against
 * the reference run, what changed between the runs (parameters, data, `.py` source), and links to
 * each run's executed notebook, HTML render and MLflow page. Server strings are rendered as text.
 */
import { ServerConnection } from '@jupyterlab/services';
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { runHtmlUrl } from '../api';
import { shortRunId } from '../dashboard/charts';
import { formatMetric } from '../runs';
import { IComparedRun, IComparison, IRunDiff } from '../tokens';
import type { IDashboardActions } from '../widgets/dashboard';

function signed(value: number | null): string {
  if (value === null) {
    return '—';
  }
  return (value > 0 ? '+' : '') + formatMetric(value);
}

function verdictOf(goal: string, delta: number | null, trans: TranslationBundle): [string, string] {
  if (delta === null || delta === 0) {
    return ['same', delta === null ? '—' : trans.__('same')];
  }
  const better = goal === 'minimize' ? delta < 0 : delta > 0;
  return better ? ['better', trans.__('better')] : ['worse', trans.__('worse')];
}

function RunLinks(props: IComparisonProps & { run: IComparedRun }): JSX.Element {
  const { run, settings, trans, actions } = props;
  const mlflow = actions.mlflowRunUrl(run.experiment, run.run_id);
  return (
    <li data-run-id={run.run_id}>
      <strong>{shortRunId(run.run_id)}</strong> {run.branch ?? ''} · {run.notebook ?? ''} · {run.commit ? run.commit.slice(0, 8) : ''}{' '}
      {run.executed ? (
        <button className="cd4ml-nb-Link" data-testid={`cd4ml-open-executed-${run.run_id}`} onClick={() => actions.openExecuted(run.executed as string, run.run_id)}>
          {trans.__('executed notebook')}
        </button>
      ) : null}{' '}
      {run.html ? (
        <a href={runHtmlUrl(settings, run.run_id)} target="_blank" rel="noopener noreferrer" data-testid={`cd4ml-open-html-${run.run_id}`}>
          {trans.__('HTML render')}
        </a>
      ) : null}{' '}
      {mlflow ? (
        <a href={mlflow} target="_blank" rel="noopener noreferrer" data-testid={`cd4ml-open-mlflow-${run.run_id}`}>
          {trans.__('Open in MLflow')}
        </a>
      ) : null}
    </li>
  );
}

function DiffView({ diff, trans }: { diff: IRunDiff; trans: TranslationBundle }): JSX.Element {
  const params = Object.entries(diff.params_changed);
  const datasets = diff.datasets.filter(d => d.only_in || d.schema_changed || d.sampling_changed);
  return (
    <div className="cd4ml-nb-Diff" data-testid={`cd4ml-diff-${diff.run_b}`}>
      <h4>
        {trans.__('%1 against %2', shortRunId(diff.run_b), shortRunId(diff.run_a))}{' '}
        <span className="cd4ml-nb-Hint">
          {trans.__('changed: %1', Object.keys(diff.axes).filter(k => diff.axes[k]).join(', ') || trans.__('nothing'))}
        </span>
      </h4>
      <table className="cd4ml-nb-DiffParams" data-testid="cd4ml-params-changed">
        <tbody>
          {params.length ? (
            params.map(([name, [a, b]]) => (
              <tr key={name} data-param={name}>
                <th>{name}</th>
                <td>{a ?? '—'}</td>
                <td>→</td>
                <td>{b ?? '—'}</td>
              </tr>
            ))
          ) : (
            <tr><td>{trans.__('parameters identical')}</td></tr>
          )}
        </tbody>
      </table>
      <p data-testid="cd4ml-data-changes">
        {datasets.length
          ? datasets
              .map(d =>
                d.only_in
                  ? trans.__('%1: logged by one run only', d.name)
                  : [d.schema_changed ? trans.__('%1: schema changed', d.name) : '', d.sampling_changed ? trans.__('%1: sampling changed', d.name) : '']
                      .filter(Boolean)
                      .join('; ')
              )
              .join('; ')
          : diff.datasets.length
            ? trans.__('data: same schema and sampling')
            : trans.__('no data sets logged')}
      </p>
      {diff.source_diff ? (
        <details open>
          <summary>{trans.__('.py diff between the runs (commits %1 → %2)', (diff.commits[0] ?? '-').slice(0, 8), (diff.commits[1] ?? '-').slice(0, 8))}</summary>
          <pre className="cd4ml-nb-CodeDiff" data-testid="cd4ml-code-diff">{diff.source_diff}</pre>
        </details>
      ) : (
        <p className="cd4ml-nb-Hint">{trans.__('paired .py source identical')}</p>
      )}
    </div>
  );
}

/** Props of {@link ComparisonView}. */
export interface IComparisonProps {
  comparison: IComparison;
  /** Connection to the Jupyter server, for the links to runs' HTML renders. */
  settings: ServerConnection.ISettings;
  trans: TranslationBundle;
  actions: IDashboardActions;
}

/** The gate, the metric deltas, the diff of each run against the reference, and links to the runs. */
export function ComparisonView(props: IComparisonProps): JSX.Element {
  const { comparison, trans } = props;
  const gate = comparison.gate;
  const shown = comparison.deltas.filter(d => d.base !== null || d.branch !== null);
  return (
    <section className="cd4ml-nb-Comparison" data-testid="cd4ml-comparison">
      <h3>{trans.__('Comparison against %1', shortRunId(comparison.reference))}</h3>
      {gate ? (
        <p
          className={`cd4ml-nb-Gate cd4ml-nb-mod-${gate.passed === null ? 'unknown' : gate.passed ? 'pass' : 'fail'}`}
          data-testid="cd4ml-gate"
          data-passed={String(gate.passed)}
        >
          {gate.passed === null
            ? trans.__('Gate (%1 vs %2, %3): cannot evaluate — %4', gate.branch ?? '?', gate.base, gate.metric, gate.message ?? '')
            : gate.passed
              ? trans.__('Gate PASS: %1 on %2 against %3', gate.metric, gate.branch ?? '?', gate.base)
              : trans.__('Gate FAIL: %1 on %2 against %3', gate.metric, gate.branch ?? '?', gate.base)}
          {gate.checks.map(c => (
            <span key={c} className="cd4ml-nb-GateCheck">{c}</span>
          ))}
        </p>
      ) : null}
      <table className="cd4ml-nb-DashboardTable" data-testid="cd4ml-deltas">
        <thead>
          <tr>
            <th>{trans.__('Run')}</th>
            <th>{trans.__('Metric')}</th>
            <th>{trans.__('Goal')}</th>
            <th>{trans.__('Reference')}</th>
            <th>{trans.__('Run value')}</th>
            <th>{trans.__('Delta')}</th>
            <th>{trans.__('Verdict')}</th>
          </tr>
        </thead>
        <tbody>
          {shown.map(d => {
            const [kind, label] = verdictOf(d.goal, d.delta, trans);
            return (
              <tr key={`${d.run_id}:${d.metric}`} data-metric={d.metric} data-run-id={d.run_id}>
                <td>{shortRunId(d.run_id)}</td>
                <td>{d.metric}</td>
                <td>{d.goal}</td>
                <td className="cd4ml-nb-Number">{formatMetric(d.base)}</td>
                <td className="cd4ml-nb-Number">{formatMetric(d.branch)}</td>
                <td className="cd4ml-nb-Number">
                  {signed(d.delta)}
                  {d.relative !== null ? ` (${(d.relative * 100).toFixed(2)}%)` : ''}
                </td>
                <td className={`cd4ml-nb-mod-${kind}`} data-verdict={kind}>{label}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {comparison.diffs.map(diff => (
        <DiffView key={diff.run_b} diff={diff} trans={trans} />
      ))}
      <ul className="cd4ml-nb-RunLinks" data-testid="cd4ml-compared-runs">
        {comparison.runs.map(run => (
          <RunLinks key={run.run_id} {...props} run={run} />
        ))}
      </ul>
    </section>
  );
}
