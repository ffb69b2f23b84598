import { ServerConnection } from '@jupyterlab/services';

import {
  cancelJob,
  getJob,
  getPairing,
  getParams,
  getRuns,
  getStatus,
  jobHtmlUrl,
  listJobs,
  pairNotebook,
  queryString,
  submitJob
} from '../api';
import { Cd4mlRequestError } from '../request';
import { FakeServer, TOKEN } from './fakeServer';

describe('api', () => {
  let server: FakeServer;

  beforeEach(() => {
    server = new FakeServer();
  });

  it('GET status sends the token', async () => {
    const status = {
      version: '0.1.0',
      branch: 'try-random-forest',
      base_branch: 'main',
      tracking_uri: 'sqlite:///x',
      mlflow_ui_url: null,
      mlflow_ui_proxy: 'cd4ml-nb/mlflow/'
    };
    server.on('GET', 'status', [200, status]);
    await expect(getStatus(server.settings)).resolves.toEqual(status);
    const [call] = server.calls;
    expect(call.headers.get('Authorization')).toBe(`token ${TOKEN}`);
  });

  it('GET pairing encodes the path as a query parameter', async () => {
    server.on('GET', 'pairing', call => [200, { path: call.query.path, paired: true }]);
    const pairing = await getPairing(server.settings, 'notebooks/a b&c.ipynb');
    expect(pairing.path).toBe('notebooks/a b&c.ipynb');
    expect(server.calls[0].query).toEqual({ path: 'notebooks/a b&c.ipynb' });
  });

  it('POST pairing sends the path in a JSON body', async () => {
    server.on('POST', 'pairing', call => [200, { path: (call.body as any).path, paired: true }]);
    await pairNotebook(server.settings, 'notebooks/train.ipynb');
    expect(server.calls[0].body).toEqual({ path: 'notebooks/train.ipynb' });
  });

  it('a 409 keeps the server message and body (the diff)', async () => {
    server.on('POST', 'pairing', [409, { message: 'notebooks/x.py differs', diff: '-a\n+b' }]);
    const error = await pairNotebook(server.settings, 'notebooks/x.ipynb').catch(e => e);
    expect(error).toBeInstanceOf(Cd4mlRequestError);
    expect(error.status).toBe(409);
    expect(error.message).toBe('notebooks/x.py differs');
    expect(error.body).toEqual({ message: 'notebooks/x.py differs', diff: '-a\n+b' });
  });

  it('GET params', async () => {
    const contract = { cell_index: 1, parameters: [] };
    server.on('GET', 'params', [200, contract]);
    await expect(getParams(server.settings, 'n.ipynb')).resolves.toEqual(contract);
    expect(server.calls[0].query).toEqual({ path: 'n.ipynb' });
  });

  it('POST jobs sends typed values and returns the id', async () => {
    server.on('POST', 'jobs', [202, { id: 'job-1' }]);
    const answer = await submitJob(server.settings, {
      path: 'notebooks/train.ipynb',
      parameters: { max_depth: 3, model: 'random_forest', flags: [1, 2], on: true }
    });
    expect(answer).toEqual({ id: 'job-1' });
    expect(server.calls[0].body).toEqual({
      path: 'notebooks/train.ipynb',
      parameters: { max_depth: 3, model: 'random_forest', flags: [1, 2], on: true }
    });
  });

  it('a 400 of POST jobs becomes an error with the server message', async () => {
    server.on('POST', 'jobs', [400, { message: 'unknown parameter: depth', error: 'ParameterError' }]);
    const error = await submitJob(server.settings, { path: 'n.ipynb', parameters: { depth: 1 } }).catch(e => e);
    expect(error).toBeInstanceOf(Cd4mlRequestError);
    expect(error.status).toBe(400);
    expect(error.message).toBe('unknown parameter: depth');
  });

  it('GET jobs unwraps the list; GET and DELETE jobs/ID escape the id', async () => {
    server.on('GET', 'jobs', [200, { jobs: [{ id: 'a' }, { id: 'b' }] }]);
    server.on('GET', /^jobs\/.+/, call => [200, { id: call.path.slice(5) }]);
    server.on('DELETE', /^jobs\/.+/, call => [200, { id: call.path.slice(5), state: 'killed' }]);
    expect((await listJobs(server.settings)).map(j => j.id)).toEqual(['a', 'b']);
    expect((await getJob(server.settings, 'x/y')).id).toBe('x/y');
    expect(await cancelJob(server.settings, 'abc')).toEqual({ id: 'abc', state: 'killed' });
    expect(server.calls.map(c => `${c.method} ${c.path}`)).toEqual([
      'GET jobs',
      'GET jobs/x/y',
      'DELETE jobs/abc'
    ]);
  });

  it('GET runs passes only the given query parameters', async () => {
    server.on('GET', 'runs', [200, { experiment: '1', runs: [], next_page_token: null }]);
    await getRuns(server.settings);
    await getRuns(server.settings, { branch: 'main', notebook: 'n.ipynb', max_results: 20, page_token: 't' });
    expect(server.calls[0].query).toEqual({});
    expect(server.calls[1].query).toEqual({
      branch: 'main',
      notebook: 'n.ipynb',
      max_results: '20',
      page_token: 't'
    });
  });

  it('an unreachable server is a NetworkError', async () => {
    const settings = ServerConnection.makeSettings({
      baseUrl: 'http://localhost:8888/base/',
      fetch: () => Promise.reject(new TypeError('Failed to fetch'))
    });
    await expect(getStatus(settings)).rejects.toBeInstanceOf(ServerConnection.NetworkError);
  });

  it('a non-JSON error body falls back to the text', async () => {
    const settings = ServerConnection.makeSettings({
      baseUrl: 'http://localhost:8888/base/',
      fetch: () => Promise.resolve(new Response('Bad Gateway', { status: 502, statusText: 'Bad Gateway' }))
    });
    const error = await getStatus(settings).catch(e => e);
    expect(error).toBeInstanceOf(Cd4mlRequestError);
    expect(error.message).toBe('Bad Gateway');
  });

  it('jobHtmlUrl points at the sandboxed HTML route', () => {
    expect(jobHtmlUrl(server.settings, 'abc123')).toBe('http://localhost:8888/base/cd4ml-nb/jobs/abc123/html');
  });

  it('queryString drops empty entries', () => {
    expect(queryString({ a: '1', b: undefined, c: null, d: '' })).toBe('?a=1');
    expect(queryString({})).toBe('');
  });
});
