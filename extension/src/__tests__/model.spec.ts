import { nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { ExperimentsModel } from '../model';
import { describePairing } from '../models/pairing';
import { samePath } from '../paths';
import { ExperimentsChange } from '../tokens';
import { FakeServer, flush, waitFor } from './fakeServer';
import { CONTRACT, contract, NOTEBOOK, STATUS, exampleServer, job, pairing, run } from './fixtures';

describe('ExperimentsModel', () => {
  let server: FakeServer;
  let model: ExperimentsModel;
  let changes: ExperimentsChange[];

  beforeEach(() => {
    server = exampleServer();
    model = new ExperimentsModel({ settings: server.settings, pollInterval: 10, checkDelay: 0 });
    changes = [];
    model.changed.connect((_, change) => changes.push(change));
  });

  afterEach(() => {
    model.dispose();
  });

  describe('status', () => {
    it('reads the branch', async () => {
      await model.refreshStatus();
      expect(model.status).toEqual(STATUS);
      expect(model.statusError).toBeNull();
      expect(changes).toContain('status');
    });

    it('keeps the error when the server does not answer', async () => {
      server.on('GET', 'status', [500, { message: 'boom' }]);
      await model.refreshStatus();
      expect(model.status).toBeNull();
      expect(model.statusError).toBe('boom');
    });

    it('re-reads the runs when the branch changes', async () => {
      await model.setNotebook(NOTEBOOK);
      const before = server.callsTo('GET', 'runs').length;
      server.on('GET', 'status', [200, { ...STATUS, branch: 'other' }]);
      await model.refreshStatus();
      expect(server.callsTo('GET', 'runs').length).toBe(before + 2);
    });
  });

  describe('setNotebook', () => {
    it('reads pairing, parameters, jobs and the runs of both branches', async () => {
      await model.setNotebook(NOTEBOOK);
      expect(model.notebookPath).toBe(NOTEBOOK);
      expect(model.pairing).toEqual(pairing());
      expect(model.contract).toEqual(CONTRACT);
      expect(model.fields.map(f => [f.parameter.name, f.raw])).toEqual([
        ['model', 'decision_tree'],
        ['max_depth', '8'],
        ['alpha', '0.5'],
        ['verbose', false],
        ['layers', '[8,4]'],
        ['limit', 'None']
      ]);
      expect(model.fields.every(f => !f.changed && f.error === null)).toBe(true);

      const runs = server.callsTo('GET', 'runs');
      expect(runs.map(c => c.query)).toEqual([
        { notebook: NOTEBOOK, max_results: '50' },
        { branch: 'main', notebook: NOTEBOOK, max_results: '50' }
      ]);
      expect(model.runs.map(s => [s.side, s.branch])).toEqual([
        ['current', 'try-random-forest'],
        ['base', 'main']
      ]);
      expect(model.allRuns.map(r => [r.run_id, r.branch, r.side])).toEqual([
        ['cur-1', 'try-random-forest', 'current'],
        ['base-1', 'main', 'base']
      ]);
      expect(model.metricNames).toEqual(['mae', 'nwrmsle']);
      expect(model.metric).toBe('mae');
      expect(model.runsLoading).toBe(false);
    });

    it('asks for one branch only when the branch is the base branch', async () => {
      server.on('GET', 'status', [200, { ...STATUS, branch: 'main' }]);
      await model.setNotebook(NOTEBOOK);
      expect(server.callsTo('GET', 'runs')).toHaveLength(1);
      expect(model.runs).toHaveLength(1);
    });

    it('shows a branch without an experiment (404) as no runs, not an error', async () => {
      server.on('GET', 'runs', call =>
        call.query.branch === 'main' ? [404, { message: 'no experiment main' }] : [200, { experiment: '1', runs: [], next_page_token: null }]
      );
      await model.setNotebook(NOTEBOOK);
      expect(model.runs.map(s => s.error)).toEqual([null, null]);
      expect(model.allRuns).toEqual([]);
      expect(model.metric).toBeNull();
    });

    it('keeps a runs error of one branch', async () => {
      server.on('GET', 'runs', call =>
        call.query.branch === 'main' ? [500, { message: 'store locked' }] : [200, { experiment: '1', runs: [run('a')], next_page_token: null }]
      );
      await model.setNotebook(NOTEBOOK);
      expect(model.runs.find(s => s.side === 'base')?.error).toBe('store locked');
      expect(model.allRuns.map(r => r.run_id)).toEqual(['a']);
    });

    it('drops answers for a notebook that is no longer followed', async () => {
      let release: () => void = () => undefined;
      const gate = new Promise<void>(resolve => (release = resolve));
      server.on('GET', 'params', async call => {
        if (call.query.path === 'old.ipynb') {
          await gate;
          return [200, { cell_index: 0, parameters: [CONTRACT.parameters[0]] }];
        }
        return [200, CONTRACT];
      });
      const first = model.setNotebook('old.ipynb');
      await flush();
      await model.setNotebook(NOTEBOOK);
      release();
      await first;
      expect(model.notebookPath).toBe(NOTEBOOK);
      expect(model.contract).toEqual(CONTRACT);
    });

    it('tracks unsaved changes of the notebook, clean again for another one', async () => {
      await model.setNotebook(NOTEBOOK);
      model.setNotebookDirty(true);
      expect(model.notebookDirty).toBe(true);
      expect(changes[changes.length - 1]).toBe('dirty');
      await model.setNotebook('other.ipynb');
      expect(model.notebookDirty).toBe(false);
    });

    it('clears everything for no notebook', async () => {
      await model.setNotebook(NOTEBOOK);
      await model.setNotebook(null);
      expect(model.pairing).toBeNull();
      expect(model.fields).toEqual([]);
      expect(model.runs).toEqual([]);
    });

    it('shows the newest job of the notebook and follows it when it is running', async () => {
      let state = 'running';
      server.on('GET', 'jobs', [200, { jobs: [job({ id: 'other', path: 'x.ipynb' }), job({ id: 'mine' })] }]);
      server.on('GET', 'jobs/mine', () => [200, job({ id: 'mine', state: state as any })]);
      await model.setNotebook(NOTEBOOK);
      expect(model.job?.id).toBe('mine');
      expect(model.jobActive).toBe(true);
      state = 'finished';
      await waitFor(() => model.job?.state === 'finished');
      expect(model.jobActive).toBe(false);
    });
  });

  describe('the parameter form', () => {
    beforeEach(async () => {
      await model.setNotebook(NOTEBOOK);
    });

    it('renders the fields from the JSON Schema, in the notebook order', () => {
      expect(model.fields.map(f => [f.parameter.name, f.parameter.kind, f.parameter.typeLabel])).toEqual([
        ['model', 'text', 'str'],
        ['max_depth', 'int', 'int'],
        ['alpha', 'float', 'float'],
        ['verbose', 'checkbox', 'bool'],
        ['layers', 'json', 'list[int]'],
        ['limit', 'int', 'int or None']
      ]);
    });

    it('has the server check a value as it is typed, and shows its reason', async () => {
      model.setValue('max_depth', '3.5');
      await waitFor(() => model.fields.find(f => f.parameter.name === 'max_depth')!.error !== null);
      expect(model.fields.find(f => f.parameter.name === 'max_depth')!.error).toBe("'3.5' is not a whole number");
      expect(server.callsTo('POST', 'params/check').pop()!.body).toEqual({ path: NOTEBOOK, texts: { max_depth: '3.5' } });
      expect(changes[changes.length - 1]).toBe('form');
      expect(model.runBlocked).toBe("max_depth: '3.5' is not a whole number");
      model.setValue('max_depth', '3');
      await waitFor(() => model.fields.find(f => f.parameter.name === 'max_depth')!.error === null);
      expect(model.fields.find(f => f.parameter.name === 'max_depth')!.changed).toBe(true);
      expect(model.runBlocked).toBeNull();
    });

    it('sends only the changed texts and keeps the values that differ from the defaults, typed by the server', async () => {
      model.setValue('max_depth', '3');
      model.setValue('alpha', '0.50'); // the server reads the default's value
      model.setValue('verbose', true);
      model.setValue('layers', '[16, 8, 4]');
      model.setValue('limit', '100');
      expect(await model.checkValues()).toEqual({ max_depth: 3, verbose: true, layers: [16, 8, 4], limit: 100 });
      expect(server.callsTo('POST', 'params/check').pop()!.body).toEqual({
        path: NOTEBOOK,
        texts: { max_depth: '3', alpha: '0.50', verbose: 'true', layers: '[16, 8, 4]', limit: '100' }
      });
    });

    it('refuses when the server refuses a value', async () => {
      model.setValue('layers', '[1, "two"]');
      expect(await model.checkValues()).toBeNull();
      expect(model.fields.find(f => f.parameter.name === 'layers')!.error).toMatch(/list\[int\].*got str/);
    });

    it('says when the values could not be checked', async () => {
      server.on('POST', 'params/check', [503, { message: 'server busy' }]);
      model.setValue('max_depth', '3');
      expect(await model.checkValues()).toBeNull();
      expect(model.runBlocked).toMatch(/could not be checked: .*server busy/);
    });

    it('resets to the defaults, with nothing to check', async () => {
      model.setValue('max_depth', '3');
      model.resetValues();
      const before = server.callsTo('POST', 'params/check').length;
      expect(await model.checkValues()).toEqual({});
      expect(server.callsTo('POST', 'params/check')).toHaveLength(before);
      expect(model.fields.find(f => f.parameter.name === 'max_depth')!.raw).toBe('8');
    });

    it('leaves an expression default empty, and refuses a contract without a schema', async () => {
      server.on('GET', 'params', [
        200,
        contract([{ name: 'grid', type: 'any', default: 'np.arange(3)', help: '', nullable: false, expression: 'np.arange(3)' }])
      ]);
      await model.refreshParams();
      const grid = model.fields[0];
      expect([grid.raw, grid.changed, grid.parameter.expression]).toEqual(['', false, 'np.arange(3)']);
      expect(await model.checkValues()).toEqual({});
      server.on('GET', 'params', [200, { cell_index: 0, parameters: CONTRACT.parameters }]);
      await model.refreshParams();
      expect(model.fields).toEqual([]);
      expect(model.contractError).toMatch(/no parameter schema/);
    });

    it('keeps changed values when the contract is read again', async () => {
      model.setValue('max_depth', '3');
      await model.refreshParams();
      expect(model.fields.find(f => f.parameter.name === 'max_depth')!.raw).toBe('3');
    });
  });

  describe('run', () => {
    beforeEach(async () => {
      await model.setNotebook(NOTEBOOK);
    });

    it('submits the changed values, polls the job to its end and re-reads the runs', async () => {
      let polls = 0;
      server.on('POST', 'jobs', [202, { id: 'job-1' }]);
      server.on('GET', 'jobs/job-1', () => {
        polls++;
        return polls < 3
          ? [200, job({ state: 'running', progress: { done: polls, total: 10 } })]
          : [200, job({ state: 'finished', progress: { done: 10, total: 10 }, metrics: { nwrmsle: 0.42 } })];
      });
      const runsBefore = server.callsTo('GET', 'runs').length;
      model.setValue('max_depth', '3');

      const started = await model.run();
      expect(started?.id).toBe('job-1');
      expect(server.callsTo('POST', 'jobs')[0].body).toEqual({ path: NOTEBOOK, parameters: { max_depth: 3 } });
      expect(model.jobActive).toBe(true);

      await waitFor(() => model.job?.state === 'finished');
      expect(polls).toBe(3);
      expect(model.job?.progress).toEqual({ done: 10, total: 10 });
      await waitFor(() => server.callsTo('GET', 'runs').length === runsBefore + 2);
      await flush();
      // no more polling once finished
      const after = polls;
      await new Promise(resolve => setTimeout(resolve, 50));
      expect(polls).toBe(after);
    });

    it('does not submit values that do not fit', async () => {
      model.setValue('max_depth', 'deep');
      expect(await model.run()).toBeNull();
      expect(server.callsTo('POST', 'jobs')).toHaveLength(0);
      expect(model.jobError).toMatch(/do not fit/);
    });

    it('shows the server refusal (400) and starts nothing', async () => {
      server.on('POST', 'jobs', [400, { message: 'max_depth: expected int, got str', error: 'ParameterError' }]);
      expect(await model.run()).toBeNull();
      expect(model.jobError).toBe('max_depth: expected int, got str');
      expect(model.job).toBeNull();
      expect(model.submitting).toBe(false);
    });

    it('does not start a second job while one runs', async () => {
      server.on('POST', 'jobs', [202, { id: 'job-1' }]);
      server.on('GET', 'jobs/job-1', [200, job({ state: 'running' })]);
      await model.run();
      expect(await model.run()).toBeNull();
      expect(server.callsTo('POST', 'jobs')).toHaveLength(1);
    });

    it('cancels: DELETE, then polls until the job is killed', async () => {
      let killed = false;
      server.on('POST', 'jobs', [202, { id: 'job-1' }]);
      server.on('GET', 'jobs/job-1', () => [200, job({ state: killed ? 'killed' : 'running', error: killed ? 'cancelled' : null })]);
      server.on('DELETE', 'jobs/job-1', () => {
        killed = true;
        return [200, { id: 'job-1', state: 'running' }];
      });
      await model.run();
      await waitFor(() => model.job?.state === 'running');
      await model.cancel();
      expect(server.callsTo('DELETE', 'jobs/job-1')).toHaveLength(1);
      await waitFor(() => model.job?.state === 'killed');
      expect(model.job?.error).toBe('cancelled');
    });

    it('stops polling a job the server forgot (404)', async () => {
      server.on('POST', 'jobs', [202, { id: 'job-1' }]);
      server.on('GET', 'jobs/job-1', [404, { message: 'no job job-1' }]);
      await model.run();
      await waitFor(() => model.jobError !== null);
      expect(model.jobError).toMatch(/no longer knows job job-1/);
      expect(model.jobActive).toBe(false);
    });

    it('keeps polling through a transient error', async () => {
      let calls = 0;
      server.on('POST', 'jobs', [202, { id: 'job-1' }]);
      server.on('GET', 'jobs/job-1', () => {
        calls++;
        return calls === 1 ? [503, { message: 'busy' }] : [200, job({ state: 'finished' })];
      });
      await model.run();
      await waitFor(() => model.job?.state === 'finished');
      expect(model.jobError).toBeNull();
    });
  });

  describe('pairing', () => {
    beforeEach(async () => {
      server.on('GET', 'pairing', [200, pairing({ paired: false, text: null, formats: null, in_sync: null, missing: 'text' })]);
      await model.setNotebook(NOTEBOOK);
    });

    it('pairs the notebook', async () => {
      server.on('POST', 'pairing', [200, pairing()]);
      await model.pair();
      expect(model.pairing?.paired).toBe(true);
      expect(model.pairingBusy).toBe(false);
      expect(server.callsTo('POST', 'pairing')[0].body).toEqual({ path: NOTEBOOK });
    });

    it('keeps the message and diff of a refusal (409)', async () => {
      server.on('POST', 'pairing', [409, { message: 'notebooks/train.py exists and differs', diff: '-x = 1\n+x = 2' }]);
      await model.pair();
      expect(model.pairing?.paired).toBe(false);
      expect(model.pairingError).toBe('notebooks/train.py exists and differs');
      expect(model.pairingDiff).toBe('-x = 1\n+x = 2');
    });
  });

  describe('runs', () => {
    it('loads more runs of one branch', async () => {
      server.on('GET', 'runs', call => {
        if (call.query.branch === 'main') {
          return [200, { experiment: '2', runs: [], next_page_token: null }];
        }
        return call.query.page_token === 'p2'
          ? [200, { experiment: '1', runs: [run('old', { start_time: 1 })], next_page_token: null }]
          : [200, { experiment: '1', runs: [run('new')], next_page_token: 'p2' }];
      });
      await model.setNotebook(NOTEBOOK);
      expect(model.runs[0].nextPageToken).toBe('p2');
      await model.loadMoreRuns('current');
      expect(model.allRuns.map(r => r.run_id)).toEqual(['new', 'old']);
      expect(model.runs[0].nextPageToken).toBeNull();
    });

    it('keeps the chosen metric while the runs log it', async () => {
      await model.setNotebook(NOTEBOOK);
      model.setMetric('nwrmsle');
      expect(changes[changes.length - 1]).toBe('metric');
      await model.refreshRuns();
      expect(model.metric).toBe('nwrmsle');
    });
  });
});

describe('describePairing', () => {
  it('names each state', () => {
    expect(describePairing(null)).toBe('');
    expect(describePairing(pairing())).toBe('paired ✓');
    expect(describePairing(pairing({ paired: false }))).toBe('not paired');
    expect(describePairing(pairing({ in_sync: false, newer: 'text' }))).toBe('out of sync');
    expect(describePairing(pairing({ in_sync: false, conflict: true }))).toBe('conflict');
    expect(describePairing(pairing({ in_sync: null, missing: 'text' }))).toBe('paired, .py missing');
  });
});

describe('samePath', () => {
  it('ignores a leading ./ or /', () => {
    expect(samePath('./a/b.ipynb', 'a/b.ipynb')).toBe(true);
    expect(samePath('/a/b.ipynb', 'a/b.ipynb')).toBe(true);
    expect(samePath('a/b.ipynb', 'a/c.ipynb')).toBe(false);
    expect(samePath(null, null)).toBe(false);
  });
});

describe('translation of the messages the model builds', () => {
  // A bundle that marks every string it translates: a message not routed through it has no marks.
  const base = nullTranslator.load('cd4ml_nb');
  const marked: TranslationBundle = Object.assign(Object.create(base), {
    __: (msgid: string, ...args: any[]) => `«${base.__(msgid, ...args)}»`
  });

  it('routes the reason Run is blocked, job messages and pairing states through the bundle', async () => {
    const server = exampleServer();
    const model = new ExperimentsModel({ settings: server.settings, pollInterval: 10, checkDelay: 0, trans: marked });
    await model.refreshStatus();
    await model.setNotebook(NOTEBOOK);
    model.setValue('max_depth', '3.5');
    await waitFor(() => model.runBlocked !== null);
    expect(model.runBlocked).toBe("«max_depth: '3.5' is not a whole number»");
    expect(await model.run()).toBeNull();
    expect(model.jobError).toBe('«Some parameters do not fit their type: see the messages above.»');

    model.setValue('max_depth', '3');
    server.on('POST', 'params/check', [503, { message: 'server busy' }]);
    expect(await model.checkValues()).toBeNull();
    expect(model.runBlocked).toMatch(/^«The values could not be checked: .*server busy»$/);

    await model.setNotebook('cd4ml-runs/0123456789ab/train.ipynb');
    expect(model.runBlocked).toBe('«This is an executed copy of a run: open the source notebook to run it.»');
    expect(describePairing(pairing({ in_sync: false, newer: 'text' }), marked)).toBe('«out of sync»');
    model.dispose();
  });

  it('translates a lost job and clears "lost contact" once the job answers again', async () => {
    const server = exampleServer();
    const model = new ExperimentsModel({ settings: server.settings, pollInterval: 10, checkDelay: 0, trans: marked });
    await model.refreshStatus();
    await model.setNotebook(NOTEBOOK);
    let polls = 0;
    server.on('POST', 'jobs', [202, { id: 'job-1' }]);
    server.on('GET', 'jobs/job-1', () => (++polls === 1 ? [500, { message: 'boom' }] : [200, job({ state: 'running' })]));
    const errors: (string | null)[] = [];
    model.changed.connect(() => errors.push(model.jobError));
    await model.run();
    await waitFor(() => model.job?.state === 'running' && polls > 1);
    expect(errors.find(e => e !== null)).toMatch(/^«Lost contact with the job: .*boom.*»$/);
    expect(model.jobError).toBeNull();
    server.on('GET', 'jobs/job-1', [404, { message: 'gone' }]);
    await waitFor(() => model.jobError !== null);
    expect(model.jobError).toBe('«The server no longer knows job job-1.»');
    model.dispose();
  });
});
