/** Payloads shaped like the cd4ml_nb server's, for the example notebook. */
import { IJob, IPairing, IParamsContract, IRun, IStatus } from '../tokens';
import { FakeServer } from './fakeServer';

export const NOTEBOOK = 'notebooks/train.ipynb';

export const STATUS: IStatus = {
  version: '0.1.0',
  branch: 'try-random-forest',
  base_branch: 'main',
  tracking_uri: 'sqlite:////repo/.cd4ml/mlflow.db',
  mlflow_ui_url: 'http://127.0.0.1:5000'
};

export function pairing(overrides: Partial<IPairing> = {}): IPairing {
  return {
    path: NOTEBOOK,
    paired: true,
    ipynb: NOTEBOOK,
    text: 'notebooks/train.py',
    formats: 'ipynb,py:percent',
    in_sync: true,
    newer: null,
    conflict: false,
    missing: null,
    basis: 'record',
    ...overrides
  };
}

export const CONTRACT: IParamsContract = {
  cell_index: 1,
  parameters: [
    { name: 'model', type: 'str', default: 'decision_tree', help: 'decision_tree or random_forest', nullable: false, expression: null },
    { name: 'max_depth', type: 'int', default: 8, help: 'maximum depth of each tree', nullable: false, expression: null },
    { name: 'alpha', type: 'float', default: 0.5, help: '', nullable: false, expression: null },
    { name: 'verbose', type: 'bool', default: false, help: '', nullable: false, expression: null },
    { name: 'layers', type: 'list[int]', default: [8, 4], help: '', nullable: false, expression: null },
    { name: 'limit', type: 'int', default: null, help: '', nullable: true, expression: null }
  ]
};

export function run(id: string, overrides: Partial<IRun> = {}): IRun {
  return {
    run_id: id,
    experiment: '1',
    status: 'FINISHED',
    start_time: 1_700_000_000,
    end_time: 1_700_000_010,
    notebook: NOTEBOOK,
    commit: 'abc123',
    params: {},
    metrics: { nwrmsle: 0.5, mae: 2 },
    reason: null,
    ...overrides
  };
}

export function job(overrides: Partial<IJob> = {}): IJob {
  return {
    id: 'job-1',
    path: NOTEBOOK,
    parameters: { max_depth: 3 },
    state: 'running',
    progress: { done: 2, total: 10 },
    run_id: 'run-new',
    experiment: '1',
    error: null,
    executed: '.cd4ml/runs/x/train.ipynb',
    html: '.cd4ml/runs/x/train.html',
    created: 1_700_000_100,
    metrics: {},
    ...overrides
  };
}

/** A server for the example notebook on branch try-random-forest, base main. */
export function exampleServer(): FakeServer {
  const server = new FakeServer();
  server
    .on('GET', 'status', [200, STATUS])
    .on('GET', 'pairing', [200, pairing()])
    .on('GET', 'params', [200, CONTRACT])
    .on('GET', 'jobs', [200, { jobs: [] }])
    .on('GET', 'runs', call =>
      call.query.branch === 'main'
        ? [200, { experiment: '2', runs: [run('base-1', { experiment: '2', start_time: 1_600_000_000, metrics: { nwrmsle: 0.7 } })], next_page_token: null }]
        : [200, { experiment: '1', runs: [run('cur-1', { params: { max_depth: '4' } })], next_page_token: null }]
    );
  return server;
}
