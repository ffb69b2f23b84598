import { DashboardModel } from '../dashboard/model';
import { ExperimentsModel } from '../model';
import { RunsSource, scopeKey } from '../models/runsSource';
import { IRunsScope } from '../tokens';
import { FakeServer, flush, waitFor } from './fakeServer';
import { exampleServer, job, NOTEBOOK, run, STATUS } from './fixtures';

const SCOPE: IRunsScope = { current: 'try-random-forest', base: 'main', notebook: NOTEBOOK, pageSize: 50 };

describe('one runs source for the panel and the dashboard', () => {
  it('a job that ends updates both, each reading its own runs once more', async () => {
    const server = exampleServer();
    let finished = false;
    server
      .on('GET', 'runs', call => {
        const runs = call.query.branch === 'main' ? [run('base-1', { start_time: 1 })] : [run('cur-1')];
        if (finished && call.query.branch !== 'main') {
          runs.unshift(run('run-new', { start_time: 1_700_000_200 }));
        }
        return [200, { experiment: '1', runs, next_page_token: null }];
      })
      .on('POST', 'jobs', [202, { id: 'job-1' }])
      .on('GET', 'jobs/job-1', () => {
        finished = true;
        return [200, job({ state: 'finished' })];
      });
    const source = new RunsSource({ settings: server.settings });
    const experiments = new ExperimentsModel({ settings: server.settings, pollInterval: 10, checkDelay: 0, runs: source });
    const dashboard = new DashboardModel({ settings: server.settings, runs: source, status: experiments });
    await experiments.setNotebook(NOTEBOOK);
    await dashboard.refresh();
    expect(experiments.allRuns.map(r => r.run_id)).toEqual(['cur-1', 'base-1']);
    expect(dashboard.runs.map(r => r.run_id)).toEqual(['cur-1', 'base-1']);
    const before = server.callsTo('GET', 'runs').length;

    await experiments.run();
    await waitFor(() => experiments.allRuns.some(r => r.run_id === 'run-new'));
    await waitFor(() => dashboard.runs.some(r => r.run_id === 'run-new'));
    expect(dashboard.runs[0].run_id).toBe('run-new');
    const after = server.callsTo('GET', 'runs').slice(before);
    // The panel's notebook on both branches, the dashboard's every run on both: no more.
    expect(after.map(c => [c.query.branch ?? null, c.query.notebook ?? null]).sort()).toEqual(
      [
        [null, NOTEBOOK],
        ['main', NOTEBOOK],
        [null, null],
        ['main', null]
      ].sort()
    );
    dashboard.dispose();
    experiments.dispose();
    source.dispose();
  });

  it('a branch change seen by the panel makes the dashboard read the new branch', async () => {
    const server = exampleServer();
    const source = new RunsSource({ settings: server.settings });
    const experiments = new ExperimentsModel({ settings: server.settings, runs: source });
    const dashboard = new DashboardModel({ settings: server.settings, runs: source, status: experiments });
    await experiments.setNotebook(NOTEBOOK);
    await dashboard.refresh();
    const before = server.callsTo('GET', 'runs').length;
    server.on('GET', 'status', [200, { ...STATUS, branch: 'other' }]);
    server.on('GET', 'runs', call => [200, { experiment: '3', runs: [run(call.query.branch ? 'main-1' : 'other-1')], next_page_token: null }]);
    await experiments.refreshStatus(); // the status poll
    expect(server.callsTo('GET', 'runs').length).toBe(before + 2); // the panel's, read once
    await waitFor(() => dashboard.runs.some(r => r.run_id === 'other-1'));
    expect(dashboard.runs.find(r => r.run_id === 'other-1')?.branch).toBe('other');
    expect(experiments.allRuns.map(r => [r.run_id, r.branch])).toEqual([
      ['other-1', 'other'],
      ['main-1', 'main']
    ]);
    dashboard.dispose();
    experiments.dispose();
    source.dispose();
  });

  it('a dashboard sharing the experiments model reads the branch there', async () => {
    const server = exampleServer();
    const experiments = new ExperimentsModel({ settings: server.settings });
    const shared = new DashboardModel({ settings: server.settings, runs: experiments.runsSource, status: experiments });
    await shared.refresh();
    expect(experiments.status).toEqual(STATUS);
    expect(shared.status).toBe(experiments.status);
    shared.dispose();
    experiments.dispose();
  });
});

describe('RunsSource', () => {
  let server: FakeServer;
  let source: RunsSource;

  beforeEach(() => {
    server = exampleServer();
    source = new RunsSource({ settings: server.settings });
  });

  afterEach(() => source.dispose());

  it('keeps the sections read per scope, and shares a read on its way', async () => {
    expect(source.sections(SCOPE)).toBeNull();
    const [a, b] = await Promise.all([source.load(SCOPE), source.load({ ...SCOPE })]);
    expect(a).toBe(b);
    expect(server.callsTo('GET', 'runs')).toHaveLength(2); // one per branch, not per reader
    expect(source.sections(SCOPE)).toBe(a);
    expect(a.map(s => [s.side, s.branch])).toEqual([
      ['current', 'try-random-forest'],
      ['base', 'main']
    ]);
    await source.load(SCOPE);
    expect(server.callsTo('GET', 'runs')).toHaveLength(4); // a later read asks again
  });

  it('reads one branch when the base is the current branch', async () => {
    const sections = await source.load({ ...SCOPE, base: SCOPE.current });
    expect(sections.map(s => s.side)).toEqual(['current']);
    expect(scopeKey({ ...SCOPE, base: SCOPE.current })).toBe(scopeKey({ ...SCOPE, base: null }));
  });

  it('forgets a read on its way when invalidated, and tells every reader', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>(resolve => (release = resolve));
    server.on('GET', 'runs', async () => {
      await gate;
      return [200, { experiment: '1', runs: [run('old')], next_page_token: null }];
    });
    let told = 0;
    source.invalidated.connect(() => told++);
    const stale = source.load(SCOPE);
    await flush();
    source.invalidate();
    expect(told).toBe(1);
    const fresh = source.load(SCOPE); // not the stale read
    release();
    await stale;
    await fresh;
    expect(server.callsTo('GET', 'runs')).toHaveLength(4);
    expect(source.sections(SCOPE)).toEqual(await fresh);
  });

  it('reads more of one branch into the sections kept', async () => {
    server.on('GET', 'runs', call =>
      call.query.page_token === 'p2'
        ? [200, { experiment: '1', runs: [run('older')], next_page_token: null }]
        : [200, { experiment: '1', runs: [run(call.query.branch ? 'base' : 'newer')], next_page_token: 'p2' }]
    );
    expect(await source.loadMore(SCOPE)).toBeNull(); // never read
    await source.load(SCOPE);
    const more = await source.loadMore(SCOPE, 'current');
    expect(more?.map(s => [s.side, s.runs.map(r => r.run_id), s.nextPageToken])).toEqual([
      ['current', ['newer', 'older'], null],
      ['base', ['base'], 'p2']
    ]);
    expect(source.sections(SCOPE)).toBe(more);
  });

  it("takes a notebook the server does not know (404) as no runs, and any other failure as the branch's error", async () => {
    server.on('GET', 'runs', [404, { message: 'notebooks/gone.ipynb: no such file' }]);
    const notebook = await source.load({ ...SCOPE, notebook: 'notebooks/gone.ipynb' });
    expect(notebook.map(s => s.error)).toEqual([null, null]);
    const all = await source.load({ ...SCOPE, notebook: null });
    expect(all.map(s => s.error)).toEqual(['notebooks/gone.ipynb: no such file', 'notebooks/gone.ipynb: no such file']);
  });
});
