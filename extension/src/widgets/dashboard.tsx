/**
 * The Experiments dashboard: a main-area widget with this branch's runs beside the base
 * branch's (a full-width table, sortable, filterable and paged), Vega-Lite charts, and the
 * comparison of the runs selected. Rendered with React (`ReactWidget`); every string from
 * the server is rendered as text.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';
import embed, { Result } from 'vega-embed';

import { ComparisonView } from '../components/comparisonView';
import { KindBadge, RunFailure } from '../components/runKind';
import {
  hasTrials,
  metricAgainstParameter,
  metricAgainstTrial,
  metricOverTime,
  shortRunId,
  VegaLiteSpec
} from '../dashboard/charts';
import { DashboardModel } from '../dashboard/model';
import { formatMetric, formatShortTime, formatTime, kindOf } from '../runs';
import { IBranchRun } from '../tokens';
import { ModelView, ViewHeader } from './modelView';

/** What the dashboard asks of JupyterLab. */
export interface IDashboardActions {
  /** Open an executed notebook (server-root relative) titled after its run. */
  openExecuted(path: string, runId: string): void;
  /** URL of a run's page in the MLflow UI, `null` when there is none. */
  mlflowRunUrl(experimentId: string, runId: string): string | null;
}

/** Whether JupyterLab shows a dark theme now. */
function isDark(): boolean {
  return document.body.dataset.jpThemeLight === 'false';
}

/** A Vega-Lite chart, embedded with vega-embed (SVG, tooltips naming the run). */
export function VegaChart(props: { spec: VegaLiteSpec; testid: string; label: string }): JSX.Element {
  const ref = React.useRef<HTMLDivElement>(null);
  const dark = isDark();
  const json = JSON.stringify(props.spec);
  React.useEffect(() => {
    let result: Result | null = null;
    let cancelled = false;
    if (ref.current) {
      embed(ref.current, JSON.parse(json), {
        actions: false,
        renderer: 'svg',
        theme: dark ? 'dark' : undefined,
        tooltip: { theme: dark ? 'dark' : 'light' },
        config: { background: 'transparent' }
      })
        .then(r => {
          if (cancelled) {
            r.finalize();
          } else {
            result = r;
          }
        })
        .catch(reason => console.warn('cd4ml_nb: chart not drawn:', reason));
    }
    return () => {
      cancelled = true;
      result?.finalize();
    };
  }, [json, dark]);
  return <div className="cd4ml-nb-Chart" data-testid={props.testid} aria-label={props.label} ref={ref} />;
}

interface IProps {
  model: DashboardModel;
  trans: TranslationBundle;
  actions: IDashboardActions;
}

function sortAttr(model: DashboardModel, key: string): 'ascending' | 'descending' | 'none' {
  if (model.sortKey !== key) {
    return 'none';
  }
  return model.sortDirection === 'asc' ? 'ascending' : 'descending';
}

function SortHeader(props: { model: DashboardModel; sortKey: string; label: string; title?: string }): JSX.Element {
  const { model, sortKey, label } = props;
  const sort = sortAttr(model, sortKey);
  return (
    <th data-sort-key={sortKey} aria-sort={sort} title={props.title ?? label}>
      <button className="cd4ml-nb-SortButton" onClick={() => model.sortBy(sortKey)}>
        {label}
        <span className="cd4ml-nb-SortMark">{sort === 'ascending' ? ' ▲' : sort === 'descending' ? ' ▼' : ''}</span>
      </button>
    </th>
  );
}

function Filters({ model, trans }: IProps): JSX.Element {
  const f = model.filter;
  return (
    <div className="cd4ml-nb-Filters" data-testid="cd4ml-dashboard-filters">
      <label>
        {trans.__('Notebook')}
        <select data-testid="cd4ml-filter-notebook" value={f.notebook} onChange={e => model.setFilter({ notebook: e.target.value })}>
          <option value="">{trans.__('all')}</option>
          {model.notebooks.map(n => (
            <option key={n} value={n}>{n}</option>
          ))}
        </select>
      </label>
      <label>
        {trans.__('Kind')}
        <select data-testid="cd4ml-filter-kind" value={f.kind} onChange={e => model.setFilter({ kind: e.target.value })}>
          <option value="">{trans.__('All kinds')}</option>
          {model.kinds.map(k => (
            <option key={k} value={k}>{k}</option>
          ))}
        </select>
      </label>
      <label>
        {trans.__('Status')}
        <select data-testid="cd4ml-filter-status" value={f.status} onChange={e => model.setFilter({ status: e.target.value })}>
          <option value="">{trans.__('all')}</option>
          {model.statuses.map(s => (
            <option key={s} value={s}>{s}</option>
          ))}
        </select>
      </label>
      <label>
        {trans.__('Parameter')}
        <input
          data-testid="cd4ml-filter-parameter"
          placeholder={trans.__('name=value')}
          value={f.parameter}
          onChange={e => model.setFilter({ parameter: e.target.value })}
        />
      </label>
      <label>
        {trans.__('Metric')}
        <input
          data-testid="cd4ml-filter-metric"
          placeholder={trans.__('e.g. %1 < 0.5', model.metric ?? 'rmse')}
          value={f.metric}
          onChange={e => model.setFilter({ metric: e.target.value })}
        />
      </label>
      <span className="cd4ml-nb-Count" data-testid="cd4ml-dashboard-count">
        {trans._n('%1 run', '%1 runs', model.filtered.length)}
        {model.hasMore ? trans.__(' (more on the server)') : ''}
      </span>
    </div>
  );
}

function Charts({ model, trans }: IProps): JSX.Element | null {
  const metric = model.metric;
  if (!metric) {
    return <p className="cd4ml-nb-Hint">{trans.__('No metric logged yet: run a notebook that logs one.')}</p>;
  }
  const runs = model.filtered;
  const parameter = model.chartParameter;
  return (
    <section className="cd4ml-nb-Charts">
      <div className="cd4ml-nb-Row">
        <label>
          {trans.__('Metric')}
          <select data-testid="cd4ml-dashboard-metric" value={metric} onChange={e => model.setMetric(e.target.value)}>
            {model.metricNames.map(m => (
              <option key={m} value={m}>{m}</option>
            ))}
          </select>
        </label>
        <label>
          {trans.__('against parameter')}
          <select
            data-testid="cd4ml-dashboard-parameter"
            value={parameter ?? ''}
            onChange={e => model.setChartParameter(e.target.value || null)}
          >
            {model.parameterNames.map(p => (
              <option key={p} value={p}>{p}</option>
            ))}
          </select>
        </label>
      </div>
      <div className="cd4ml-nb-ChartGrid">
        <VegaChart spec={metricOverTime(runs, metric)} testid="cd4ml-chart-time" label={trans.__('%1 per branch over time', metric)} />
        {parameter ? (
          <VegaChart
            spec={metricAgainstParameter(runs, metric, parameter)}
            testid="cd4ml-chart-parameter"
            label={trans.__('%1 against %2', metric, parameter)}
          />
        ) : null}
        {hasTrials(runs) ? (
          <VegaChart
            spec={metricAgainstTrial(runs, metric)}
            testid="cd4ml-chart-trial"
            label={trans.__('%1 against trial number', metric)}
          />
        ) : null}
      </div>
    </section>
  );
}

function RunsTable({ model, trans, actions }: IProps): JSX.Element {
  const metrics = model.metricNames;
  const params = model.parameterNames;
  const rows = model.pageRuns;
  return (
    <div className="cd4ml-nb-DashboardTableScroll">
      <table className="cd4ml-nb-DashboardTable" data-testid="cd4ml-dashboard-table">
        <thead>
          <tr>
            <th title={trans.__('Select to compare')}>{trans.__('Compare')}</th>
            <th>{trans.__('Run')}</th>
            <SortHeader model={model} sortKey="branch" label={trans.__('Branch')} />
            <SortHeader model={model} sortKey="notebook" label={trans.__('Notebook')} />
            <SortHeader model={model} sortKey="kind" label={trans.__('Kind')} />
            <SortHeader model={model} sortKey="status" label={trans.__('Status')} />
            <SortHeader model={model} sortKey="start_time" label={trans.__('Started')} />
            {metrics.map(m => (
              <SortHeader key={m} model={model} sortKey={`metric:${m}`} label={m} />
            ))}
            {params.map(p => (
              <SortHeader key={p} model={model} sortKey={`param:${p}`} label={p} title={trans.__('parameter %1', p)} />
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map(run => (
            <RunRow key={run.run_id} run={run} model={model} trans={trans} actions={actions} metrics={metrics} params={params} />
          ))}
        </tbody>
      </table>
      {rows.length === 0 && !model.loading ? (
        <p className="cd4ml-nb-Hint" data-testid="cd4ml-dashboard-empty">
          {emptyHint(model, trans)}
        </p>
      ) : null}
    </div>
  );
}

/** Why the table is empty: no runs, none of the kind chosen, or none that passes the other filters. */
function emptyHint(model: DashboardModel, trans: TranslationBundle): string {
  if (!model.runs.length) {
    return trans.__('No runs yet on these branches.');
  }
  const kind = model.filter.kind;
  if (kind && !model.runs.some(run => kindOf(run) === kind)) {
    return trans.__('No run of kind %1 on these branches: choose "All kinds" to see the others.', kind);
  }
  return trans.__('No run matches the filter.');
}

function RunRow(props: IProps & { run: IBranchRun; metrics: ReadonlyArray<string>; params: ReadonlyArray<string> }): JSX.Element {
  const { run, model, trans, actions } = props;
  const selected = model.selected.includes(run.run_id);
  const mlflow = actions.mlflowRunUrl(run.experiment, run.run_id);
  return (
    <tr data-run-id={run.run_id} data-side={run.side} aria-selected={selected} className={selected ? 'cd4ml-nb-mod-selected' : ''}>
      <td>
        <input
          type="checkbox"
          aria-label={trans.__('Compare run %1', shortRunId(run.run_id))}
          data-testid={`cd4ml-select-${run.run_id}`}
          checked={selected}
          onChange={() => model.toggle(run.run_id)}
        />
      </td>
      <td className="cd4ml-nb-RunId" title={run.run_id}>
        {mlflow ? (
          <a
            href={mlflow}
            target="_blank"
            rel="noopener noreferrer"
            title={trans.__('Open in MLflow')}
            data-testid={`cd4ml-mlflow-${run.run_id}`}
          >
            {shortRunId(run.run_id)}
          </a>
        ) : (
          shortRunId(run.run_id)
        )}
      </td>
      <td className="cd4ml-nb-BranchCell" title={run.branch ?? ''}>
        <span className={`cd4ml-nb-Swatch cd4ml-nb-mod-${run.side}`} />
        {run.branch ?? trans.__('(no branch)')}
      </td>
      <td title={run.notebook ?? ''}>{run.notebook ?? ''}</td>
      <td data-kind={kindOf(run)}>
        <KindBadge run={run} trans={trans} />
      </td>
      <td data-status={run.status} title={run.reason ?? ''}>
        {run.status}
        <RunFailure run={run} trans={trans} />
      </td>
      <td title={formatTime(run.start_time)}>{formatShortTime(run.start_time)}</td>
      {props.metrics.map(m => (
        <td key={m} data-metric={m} className="cd4ml-nb-Number">{formatMetric(run.metrics?.[m])}</td>
      ))}
      {props.params.map(p => (
        <td key={p} data-param={p}>{run.params?.[p] ?? ''}</td>
      ))}
    </tr>
  );
}

function Pager({ model, trans }: IProps): JSX.Element {
  const last = model.page >= model.pageCount - 1 && !model.hasMore;
  return (
    <div className="cd4ml-nb-Pager" data-testid="cd4ml-dashboard-pager">
      <button className="jp-Button jp-mod-styled" disabled={model.page === 0} onClick={() => void model.setPage(model.page - 1)}>
        {trans.__('Previous')}
      </button>
      <span data-testid="cd4ml-dashboard-page">
        {trans.__('Page %1 of %2', model.page + 1, model.pageCount + (model.hasMore ? '+' : ''))}
      </span>
      <button className="jp-Button jp-mod-styled" disabled={last} onClick={() => void model.setPage(model.page + 1)}>
        {trans.__('Next')}
      </button>
    </div>
  );
}

function Dashboard(props: IProps): JSX.Element {
  const { model, trans } = props;
  const status = model.status;
  return (
    <div className="cd4ml-nb-Dashboard" data-testid="cd4ml-dashboard">
      <ViewHeader model={model} trans={trans} title={trans.__('Experiments')} reading={trans.__('Reading runs…')}>
        <span data-testid="cd4ml-dashboard-branches">
          <span className="cd4ml-nb-Swatch cd4ml-nb-mod-current" /> {status?.branch ?? trans.__('(no branch)')}{' '}
          {trans.__('against')} <span className="cd4ml-nb-Swatch cd4ml-nb-mod-base" /> {model.baseBranch ?? ''}
        </span>
      </ViewHeader>
      {model.error ? (
        <p className="cd4ml-nb-Error" data-testid="cd4ml-dashboard-error">{model.error}</p>
      ) : null}
      <Filters {...props} />
      <Charts {...props} />
      <div className="cd4ml-nb-Row cd4ml-nb-CompareBar">
        <button
          className="jp-Button jp-mod-styled jp-mod-accept"
          data-testid="cd4ml-compare-button"
          disabled={model.selected.length < 2 || model.comparing}
          onClick={() => void model.compare()}
        >
          {model.comparing ? trans.__('Comparing…') : trans.__('Compare selected (%1)', model.selected.length)}
        </button>
        {model.selected.length ? (
          <button className="jp-Button jp-mod-styled" onClick={() => model.clearSelection()}>{trans.__('Clear selection')}</button>
        ) : (
          <span className="cd4ml-nb-Hint">{trans.__('Tick two or more runs to compare them.')}</span>
        )}
        {model.compareError ? <span className="cd4ml-nb-Error" data-testid="cd4ml-compare-error">{model.compareError}</span> : null}
      </div>
      <RunsTable {...props} />
      <Pager {...props} />
      {model.comparison ? (
        <ComparisonView comparison={model.comparison} settings={model.settings} trans={trans} actions={props.actions} />
      ) : null}
    </div>
  );
}

/** The dashboard widget (wrap it in a `MainAreaWidget`). */
export class DashboardView extends ModelView<DashboardModel> {
  constructor(model: DashboardModel, private readonly _actions: IDashboardActions, trans?: TranslationBundle) {
    super(model, trans);
  }

  render(): JSX.Element {
    return <Dashboard model={this.model} trans={this.trans} actions={this._actions} />;
  }
}
