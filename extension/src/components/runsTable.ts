/**
 * The runs of this branch and of the base branch: status, metrics (the chosen one
 * first), parameters and start time; a click on a header sorts by that column.
 */
import {
  RunSortKey,
  SortDirection,
  formatMetric,
  formatParams,
  formatShortTime,
  formatTime,
  mlflowRunUrl,
  sortRuns
} from '../runs';
import { IBranchRun, IExperimentsModel } from '../tokens';
import { h, replaceChildren } from './dom';

/** Metric columns shown at most (the chosen metric first). */
const MAX_METRIC_COLUMNS = 4;

interface IColumn {
  key: RunSortKey;
  label: string;
  title?: string;
  cell(run: IBranchRun): HTMLTableCellElement;
}

export class RunsTable {
  constructor(model: IExperimentsModel) {
    this._model = model;
    this.node = h('table', { className: 'cd4ml-nb-RunsTable', testid: 'cd4ml-runs-table' });
  }

  readonly node: HTMLTableElement;

  get sortKey(): RunSortKey {
    return this._sortKey;
  }

  get sortDirection(): SortDirection {
    return this._direction;
  }

  /** Sort by a column: a second click on the same column reverses the order. */
  sortBy(key: RunSortKey): void {
    if (key === this._sortKey) {
      this._direction = this._direction === 'asc' ? 'desc' : 'asc';
    } else {
      this._sortKey = key;
      this._direction = key === 'start_time' ? 'desc' : 'asc';
    }
    this.update();
  }

  update(): void {
    const model = this._model;
    const columns = this._columns();
    if (!columns.some(column => column.key === this._sortKey)) {
      this._sortKey = 'start_time';
      this._direction = 'desc';
    }
    const head = h('thead', {}, [
      h(
        'tr',
        {},
        columns.map(column => {
          const sorted = column.key === this._sortKey;
          const th = h(
            'th',
            {
              className: sorted ? 'cd4ml-nb-mod-sorted' : '',
              title: column.title ?? `Sort by ${column.label}`,
              attrs: {
                'data-sort-key': column.key,
                'aria-sort': sorted ? (this._direction === 'asc' ? 'ascending' : 'descending') : 'none',
                role: 'columnheader',
                tabindex: '0'
              }
            },
            [
              column.label,
              sorted ? h('span', { className: 'cd4ml-nb-SortMark', text: this._direction === 'asc' ? ' ▲' : ' ▼' }) : null
            ]
          );
          th.addEventListener('click', () => this.sortBy(column.key));
          th.addEventListener('keydown', event => {
            if (event.key === 'Enter' || event.key === ' ') {
              event.preventDefault();
              this.sortBy(column.key);
            }
          });
          return th;
        })
      )
    ]);
    const rows = sortRuns(model.allRuns, this._sortKey, this._direction);
    const body = h(
      'tbody',
      {},
      rows.length
        ? rows.map(run =>
            h(
              'tr',
              {
                className: `cd4ml-nb-RunRow cd4ml-nb-mod-${run.side}`,
                testid: 'cd4ml-run-row',
                attrs: {
                  'data-run-id': run.run_id,
                  'data-side': run.side,
                  'data-status': run.status
                }
              },
              columns.map(column => column.cell(run))
            )
          )
        : [
            h('tr', {}, [
              h('td', {
                className: 'cd4ml-nb-Hint',
                text: model.runsLoading ? 'Loading runs…' : 'No runs of this notebook yet.',
                attrs: { colspan: String(columns.length) }
              })
            ])
          ]
    );
    replaceChildren(this.node, [head, body]);
  }

  private _metricColumns(): string[] {
    const names = [...this._model.metricNames];
    const chosen = this._model.metric;
    const ordered = chosen && names.includes(chosen) ? [chosen, ...names.filter(n => n !== chosen)] : names;
    return ordered.slice(0, MAX_METRIC_COLUMNS);
  }

  private _columns(): IColumn[] {
    const model = this._model;
    const columns: IColumn[] = [
      {
        key: 'branch',
        label: 'Branch',
        cell: run =>
          h('td', { className: 'cd4ml-nb-BranchCell' }, [
            h('span', { className: `cd4ml-nb-Swatch cd4ml-nb-mod-${run.side}` }),
            run.branch ?? 'no-git'
          ])
      },
      {
        key: 'status',
        label: 'Status',
        cell: run => {
          const url = mlflowRunUrl(model.status?.mlflow_ui_url, run.experiment, run.run_id);
          const label = run.reason ? `${run.status} (${run.reason})` : run.status;
          const title = [`Run ${run.run_id}`, run.commit ? `Commit ${run.commit}` : '', run.notebook ?? '']
            .filter(Boolean)
            .join('\n');
          return h('td', { className: `cd4ml-nb-Status cd4ml-nb-mod-${run.status.toLowerCase()}`, title }, [
            url
              ? h('a', {
                  className: 'cd4ml-nb-Link',
                  text: label,
                  attrs: { href: url, target: '_blank', rel: 'noopener noreferrer' }
                })
              : label
          ]);
        }
      },
      ...this._metricColumns().map(
        (name): IColumn => ({
          key: `metric:${name}`,
          label: name,
          title: `Sort by metric ${name}`,
          cell: run =>
            h('td', {
              className: 'cd4ml-nb-Number',
              text: formatMetric(run.metrics?.[name]),
              title: run.metrics?.[name] === undefined ? '' : String(run.metrics[name]),
              attrs: { 'data-metric': name }
            })
        })
      ),
      {
        key: 'start_time',
        label: 'Started',
        cell: run =>
          h('td', {
            className: 'cd4ml-nb-Time',
            text: formatShortTime(run.start_time),
            title: formatTime(run.start_time)
          })
      },
      {
        key: 'params',
        label: 'Parameters',
        cell: run => {
          const names = Object.keys(run.params ?? {}).sort();
          return h(
            'td',
            { className: 'cd4ml-nb-Params', title: formatParams(run.params) },
            names.map(name => h('div', { text: `${name}=${run.params[name]}` }))
          );
        }
      }
    ];
    return columns;
  }

  private _model: IExperimentsModel;
  private _sortKey: RunSortKey = 'start_time';
  private _direction: SortDirection = 'desc';
}
