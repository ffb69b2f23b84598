import {
  hasTrials,
  metricAgainstParameter,
  metricAgainstTrial,
  metricOverTime,
  parameterNames
} from '../dashboard/charts';
import { DEFAULT_FILTER, matchesFilter, NO_FILTER, parseMetricFilter } from '../dashboard/filter';
import { DashboardModel } from '../dashboard/model';
import { IBranchRun } from '../tokens';
import { FakeServer } from './fakeServer';
import { run, STATUS } from './fixtures';

function branchRun(id: string, side: 'current' | 'base', overrides: Partial<IBranchRun> = {}): IBranchRun {
  return { ...run(id), branch: side === 'base' ? 'main' : 'try-random-forest', side, ...overrides };
}

/** Two branches: 30 runs on the branch (served 20 then 10), 2 on main. */
function dashboardServer(): FakeServer {
  const server = new FakeServer();
  const current = Array.from({ length: 30 }, (_, i) =>
    run(`cur-${String(i).padStart(2, '0')}`, {
      start_time: 1_700_000_000 + i,
      params: { max_depth: String(i % 5), model: i % 2 ? 'random_forest' : 'decision_tree' },
      metrics: { nwrmsle: 0.4 + i / 100 },
      status: i === 13 ? 'FAILED' : 'FINISHED'
    })
  );
  server
    .on('GET', 'status', [200, STATUS])
    .on('GET', 'runs', call => {
      if (call.query.branch === 'main') {
        return [200, { experiment: '2', runs: [run('base-1', { experiment: '2', metrics: { nwrmsle: 0.7 } }), run('base-2', { experiment: '2', notebook: 'other.ipynb' })], next_page_token: null }];
      }
      return call.query.page_token === 'p2'
        ? [200, { experiment: '1', runs: current.slice(0, 10), next_page_token: null }]
        : [200, { experiment: '1', runs: current.slice(10), next_page_token: 'p2' }];
    });
  return server;
}

describe('parseMetricFilter', () => {
  it('reads a condition, a bare name, or refuses', () => {
    expect(parseMetricFilter('nwrmsle < 0.6')).toEqual({ name: 'nwrmsle', op: '<', value: 0.6 });
    expect(parseMetricFilter('acc>=1e-2')).toEqual({ name: 'acc', op: '>=', value: 0.01 });
    expect(parseMetricFilter(' mae ')).toEqual({ name: 'mae', op: null, value: null });
    expect(parseMetricFilter('mae < x')).toBeNull();
    expect(parseMetricFilter('')).toBeNull();
  });
});

describe('matchesFilter', () => {
  const r = branchRun('a', 'current', { params: { max_depth: '3', model: 'rf' }, metrics: { nwrmsle: 0.5 } });
  it('filters by notebook, status, parameter and metric', () => {
    expect(matchesFilter(r, NO_FILTER)).toBe(true);
    expect(matchesFilter(r, { ...NO_FILTER, notebook: 'other.ipynb' })).toBe(false);
    expect(matchesFilter(r, { ...NO_FILTER, status: 'FAILED' })).toBe(false);
    expect(matchesFilter(r, { ...NO_FILTER, parameter: 'max_depth=3' })).toBe(true);
    expect(matchesFilter(r, { ...NO_FILTER, parameter: 'max_depth=4' })).toBe(false);
    expect(matchesFilter(r, { ...NO_FILTER, parameter: 'model' })).toBe(true);
    expect(matchesFilter(r, { ...NO_FILTER, parameter: 'RF' })).toBe(true);
    expect(matchesFilter(r, { ...NO_FILTER, metric: 'nwrmsle<0.6' })).toBe(true);
    expect(matchesFilter(r, { ...NO_FILTER, metric: 'nwrmsle>0.6' })).toBe(false);
    expect(matchesFilter(r, { ...NO_FILTER, metric: 'mae' })).toBe(false);
    expect(matchesFilter(r, { ...NO_FILTER, metric: 'nwrmsle <' })).toBe(false);
  });

  it('filters by kind, a run without one (an older server) being a plain run', () => {
    const trial = branchRun('t', 'current', { kind: 'trial', parent_run_id: 'sweep-1' });
    expect(DEFAULT_FILTER.kind).toBe('run');
    expect(matchesFilter(r, DEFAULT_FILTER)).toBe(true);
    expect(matchesFilter(trial, DEFAULT_FILTER)).toBe(false);
    expect(matchesFilter(trial, { ...NO_FILTER, kind: 'trial' })).toBe(true);
    expect(matchesFilter(trial, NO_FILTER)).toBe(true);
    expect(matchesFilter(branchRun('old', 'base', { kind: undefined }), DEFAULT_FILTER)).toBe(true);
  });
});

describe('DashboardModel kinds', () => {
  let server: FakeServer;
  let model: DashboardModel;

  beforeEach(async () => {
    server = new FakeServer();
    server.on('GET', 'status', [200, STATUS]).on('GET', 'runs', call =>
      call.query.branch === 'main'
        ? [200, { experiment: '2', runs: [run('base-run', { experiment: '2', metrics: { nwrmsle: 0.7 } }), run('base-ci', { experiment: '2', kind: 'ci', metrics: { nwrmsle: 0.1 } })], next_page_token: null }]
        : [
            200,
            {
              experiment: '1',
              runs: [
                run('cur-run', { metrics: { nwrmsle: 0.5 }, params: { max_depth: '3' } }),
                run('cur-sweep', { kind: 'sweep', metrics: {} }),
                run('cur-trial-1', { kind: 'trial', parent_run_id: 'cur-sweep', metrics: { nwrmsle: 0.3 }, params: { max_depth: '9' } }),
                run('cur-trial-2', { kind: 'trial', parent_run_id: 'cur-sweep', status: 'FAILED', reason: 'cell-exception', failed_cell: 4, message: 'boom', metrics: {} })
              ],
              next_page_token: null
            }
          ]
    );
    model = new DashboardModel({ settings: server.settings, pageSize: 2 });
    await model.refresh();
  });

  afterEach(() => model.dispose());

  it('lists plain runs of both branches first, like with like', () => {
    expect(model.filter.kind).toBe('run');
    expect(model.filtered.map(r => r.run_id).sort()).toEqual(['base-run', 'cur-run']);
    expect(model.kinds).toEqual(['run', 'trial', 'sweep', 'ci']);
    const charted = (metricOverTime(model.filtered, 'nwrmsle') as any).data.values.map((p: any) => p.run_id).sort();
    expect(charted).toEqual(['base-run', 'cur-run']);
  });

  it('shows every kind, or one, when asked; paging follows the filter', async () => {
    model.setFilter({ kind: '' });
    expect(model.filtered).toHaveLength(6);
    expect(model.pageCount).toBe(3);
    await model.setPage(2);
    model.setFilter({ kind: 'trial' });
    expect(model.page).toBe(0);
    expect(model.filtered.map(r => r.run_id).sort()).toEqual(['cur-trial-1', 'cur-trial-2']);
    expect(model.pageCount).toBe(1);
    const charted = (metricAgainstParameter(model.filtered, 'nwrmsle', 'max_depth') as any).data.values.map((p: any) => p.run_id);
    expect(charted).toEqual(['cur-trial-1']);
  });

  it('keeps the kind chosen among the choices when no run has it', () => {
    model.setFilter({ kind: 'pipeline' });
    expect(model.kinds).toEqual(['pipeline', 'run', 'trial', 'sweep', 'ci']);
    expect(model.filtered).toHaveLength(0);
  });
});

describe('DashboardModel', () => {
  let server: FakeServer;
  let model: DashboardModel;

  beforeEach(async () => {
    server = dashboardServer();
    model = new DashboardModel({ settings: server.settings, pageSize: 10, serverPageSize: 20 });
    await model.refresh();
  });

  afterEach(() => model.dispose());

  it('reads both branches, the current one without a branch query', () => {
    const calls = server.callsTo('GET', 'runs');
    expect(calls.map(c => c.query.branch ?? null).sort()).toEqual(['main', null]);
    expect(calls.every(c => c.query.max_results === '20')).toBe(true);
    expect(model.runs).toHaveLength(22);
    expect(new Set(model.runs.map(r => r.side))).toEqual(new Set(['current', 'base']));
    expect(model.hasMore).toBe(true);
    expect(model.metric).toBe('mae');
    expect(model.notebooks).toEqual(['notebooks/train.ipynb', 'other.ipynb']);
  });

  it('pages through what was read, then asks the server for more', async () => {
    expect(model.pageRuns).toHaveLength(10);
    expect(model.pageCount).toBe(3);
    await model.setPage(2);
    expect(model.page).toBe(2);
    expect(server.callsTo('GET', 'runs')).toHaveLength(2);
    await model.setPage(3);
    expect(server.callsTo('GET', 'runs').some(c => c.query.page_token === 'p2')).toBe(true);
    expect(model.runs).toHaveLength(32);
    expect(model.hasMore).toBe(false);
    expect(model.page).toBe(3);
    expect(model.pageRuns).toHaveLength(2);
  });

  it('filters (back to the first page) and sorts, reversing on the same column', async () => {
    await model.setPage(1);
    model.setFilter({ parameter: 'model=random_forest' });
    expect(model.page).toBe(0);
    expect(model.filtered.every(r => r.params.model === 'random_forest')).toBe(true);
    expect(model.filtered).toHaveLength(10);
    model.setFilter({ parameter: '', status: 'FAILED' });
    expect(model.filtered.map(r => r.run_id)).toEqual(['cur-13']);
    model.setFilter({ status: '', metric: 'nwrmsle > 0.605' });
    expect(model.filtered.map(r => r.run_id).sort()).toEqual(['base-1', 'cur-21', 'cur-22', 'cur-23', 'cur-24', 'cur-25', 'cur-26', 'cur-27', 'cur-28', 'cur-29']);
    model.sortBy('metric:nwrmsle');
    expect(model.sortDirection).toBe('asc');
    expect(model.filtered[0].run_id).toBe('cur-21');
    model.sortBy('metric:nwrmsle');
    expect(model.filtered[0].run_id).toBe('base-1');
  });

  it('compares the selected runs, a base run first, with the charted metric', async () => {
    server.on('POST', 'compare', call => [200, { reference: (call.body as any).run_ids[0], runs: [], goals: {}, deltas: [], diffs: [], gate: null }]);
    expect(await model.compare()).toBeNull();
    expect(model.compareError).toMatch(/two or more/);
    model.toggle('cur-29');
    model.toggle('base-1');
    model.setMetric('nwrmsle');
    const result = await model.compare('2%');
    expect(server.callsTo('POST', 'compare')[0].body).toEqual({ run_ids: ['base-1', 'cur-29'], metric: 'nwrmsle', max_regression: '2%' });
    expect(result?.reference).toBe('base-1');
    model.toggle('base-1');
    expect(model.selected).toEqual(['cur-29']);
  });

  it('says why the runs could not be read', async () => {
    server.on('GET', 'runs', [503, { message: 'MLflow store is away' }]);
    await model.refresh();
    expect(model.error).toBe('MLflow store is away');
    expect(model.runs).toHaveLength(0);
  });
});

describe('charts', () => {
  const runs = [
    branchRun('aaaaaaaa1111', 'current', { params: { max_depth: '3', model: 'rf' }, metrics: { nwrmsle: 0.5 } }),
    branchRun('bbbbbbbb2222', 'base', { params: { max_depth: '8', model: 'dt' }, metrics: { nwrmsle: 0.7 } }),
    branchRun('cccccccc3333', 'base', { params: { max_depth: '8' }, metrics: {} })
  ];

  it('charts a metric per branch over time, tooltips naming the run', () => {
    const spec = metricOverTime(runs, 'nwrmsle') as any;
    expect(spec.data.values.map((p: any) => [p.run, p.branch, p.value])).toEqual([
      ['aaaaaaaa', 'try-random-forest', 0.5],
      ['bbbbbbbb', 'main', 0.7]
    ]);
    expect(spec.encoding.color.field).toBe('branch');
    expect(spec.layer[1].encoding.tooltip[0]).toEqual({ field: 'run', type: 'nominal', title: 'Run' });
  });

  it('charts a metric against a parameter, numeric or not', () => {
    const numeric = metricAgainstParameter(runs, 'nwrmsle', 'max_depth') as any;
    expect(numeric.encoding.x.type).toBe('quantitative');
    expect(numeric.data.values.map((p: any) => p.x)).toEqual([3, 8]);
    const nominal = metricAgainstParameter(runs, 'nwrmsle', 'model') as any;
    expect(nominal.encoding.x.type).toBe('nominal');
    expect(nominal.data.values.map((p: any) => p.x)).toEqual(['rf', 'dt']);
    expect(nominal.encoding.tooltip.map((t: any) => t.title)).toContain('Run');
    expect(parameterNames(runs)).toEqual(['max_depth', 'model']);
  });

  it('charts a metric against the trial number, a line per sweep, trials in order', () => {
    const trials = [
      branchRun('t2', 'current', { kind: 'trial', trial: 2, parent_run_id: 'sweep0001abcd', metrics: { loss: 0.2 } }),
      branchRun('t0', 'current', { kind: 'trial', trial: 0, parent_run_id: 'sweep0001abcd', metrics: { loss: 0.9 } }),
      branchRun('t1', 'current', { kind: 'trial', trial: 1, parent_run_id: 'sweep0001abcd', metrics: {} })
    ];
    expect(hasTrials(runs)).toBe(false);
    expect(hasTrials(trials)).toBe(true);
    const spec = metricAgainstTrial([...runs, ...trials], 'loss') as any;
    expect(spec.data.values.map((p: any) => [p.x, p.value, p.sweep])).toEqual([
      [0, 0.9, 'sweep000'],
      [2, 0.2, 'sweep000']
    ]);
    expect(spec.encoding.x.title).toBe('Trial');
    expect(spec.layer[1].encoding.tooltip.map((t: any) => t.title)).toContain('Trial');
  });
});
