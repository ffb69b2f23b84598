/** Payloads shaped like the cd4ml_nb server's, for the example notebook. */
import { IJob, IPairing, IParameter, IParameterSchema, IParamsCheck, IParamsContract, IRun, IStatus } from '../tokens';
import { FakeServer } from './fakeServer';

export const NOTEBOOK = 'notebooks/train.ipynb';

export const STATUS: IStatus = {
  version: '0.1.0',
  branch: 'try-random-forest',
  base_branch: 'main',
  tracking_uri: 'sqlite:////repo/.cd4ml/mlflow.db',
  mlflow_ui_url: 'http://127.0.0.1:5000',
  mlflow_ui_proxy: null
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

/** The JSON Schema type of a declared type, as `cd4ml_nb.params.json_schema` writes it. */
function typeSchema(type: string): IParameterSchema {
  const scalar: Record<string, string> = { int: 'integer', float: 'number', str: 'string', bool: 'boolean', list: 'array', dict: 'object' };
  const list = /^list\[(\w+)\]$/.exec(type);
  if (list) {
    return { type: 'array', items: { type: scalar[list[1]] } };
  }
  return scalar[type] ? { type: scalar[type] } : {};
}

/** A `GET params` payload: the parameters and their JSON Schema, as the server sends them. */
export function contract(parameters: IParameter[], cellIndex = 1): IParamsContract {
  const properties: Record<string, IParameterSchema> = {};
  for (const p of parameters) {
    let schema = typeSchema(p.type);
    if (p.nullable && schema.type) {
      schema = { anyOf: [schema, { type: 'null' }] };
    }
    properties[p.name] = {
      ...schema,
      title: p.name,
      'x-cd4ml-type': p.type,
      'x-cd4ml-nullable': p.nullable,
      ...(p.help ? { description: p.help } : {}),
      ...(p.expression !== null ? { 'x-cd4ml-expression': p.expression } : { default: p.default })
    };
  }
  return {
    cell_index: cellIndex,
    parameters,
    schema: { type: 'object', properties, additionalProperties: false, 'x-cd4ml-order': parameters.map(p => p.name) }
  };
}

export const CONTRACT: IParamsContract = contract([
  { name: 'model', type: 'str', default: 'decision_tree', help: 'decision_tree or random_forest', nullable: false, expression: null },
  { name: 'max_depth', type: 'int', default: 8, help: 'maximum depth of each tree', nullable: false, expression: null },
  { name: 'alpha', type: 'float', default: 0.5, help: '', nullable: false, expression: null },
  { name: 'verbose', type: 'bool', default: false, help: '', nullable: false, expression: null },
  { name: 'layers', type: 'list[int]', default: [8, 4], help: '', nullable: false, expression: null },
  { name: 'limit', type: 'int', default: null, help: '', nullable: true, expression: null }
]);

/** Texts the fake server's check refuses, with the server's reason (the rest read as JSON, else text). */
const REFUSED: Record<string, string> = {
  deep: 'is not a whole number',
  three: 'is not a whole number',
  '3.5': 'is not a whole number',
  '[1, "two"]': 'is not a list[int] (YAML/JSON) (expected int, got str)'
};

/** A canned `POST params/check` answer (the real one is the runner's parser, tested in Python). */
export function checkTexts(texts: Record<string, string>): IParamsCheck {
  const values: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  for (const [name, text] of Object.entries(texts)) {
    if (REFUSED[text]) {
      errors[name] = `'${text}' ${REFUSED[text]}`;
    } else if (text === 'None') {
      values[name] = null;
    } else {
      try {
        values[name] = JSON.parse(text);
      } catch {
        values[name] = text;
      }
    }
  }
  return { values, errors };
}

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
    kind: 'run',
    parent_run_id: null,
    failed_cell: null,
    message: null,
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
    .on('POST', 'params/check', call => [200, checkTexts((call.body as { texts: Record<string, string> }).texts)])
    .on('GET', 'jobs', [200, { jobs: [] }])
    .on('GET', 'runs', call =>
      call.query.branch === 'main'
        ? [200, { experiment: '2', runs: [run('base-1', { experiment: '2', start_time: 1_600_000_000, metrics: { nwrmsle: 0.7 } })], next_page_token: null }]
        : [200, { experiment: '1', runs: [run('cur-1', { params: { max_depth: '4' } })], next_page_token: null }]
    );
  return server;
}
