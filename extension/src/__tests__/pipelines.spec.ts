import { formatSeconds, overrideChoices, PipelinesModel } from '../dashboard/pipelines';
import { FakeServer } from './fakeServer';

const FILE = {
  file: 'cd4ml-pipeline.yaml',
  steps: [
    { name: 'prep', notebook: 'prep.ipynb', needs: [], parameters: { rows: 3 }, outputs: ['data/rows.txt'] },
    { name: 'train', notebook: 'train.ipynb', needs: ['prep'], parameters: { max_depth: 2, model: 'tree' }, outputs: [] }
  ]
};

function job(state: string, done = 0) {
  return {
    id: 'abcdef012345', path: 'cd4ml-pipeline.yaml', parameters: { 'train.max_depth': '5' }, state,
    progress: { done, total: 2 }, run_id: null, experiment: null, error: null, executed: null, html: null,
    created: 1, metrics: {}
  };
}

describe('pipelines helpers', () => {
  it('lists every STEP.NAME an override can name, with its value as text', () => {
    expect(overrideChoices(FILE)).toEqual([
      { target: 'prep.rows', value: '3' },
      { target: 'train.max_depth', value: '2' },
      { target: 'train.model', value: 'tree' }
    ]);
    expect(overrideChoices(null)).toEqual([]);
  });

  it('formats durations', () => {
    expect(formatSeconds(0.84)).toBe('0.8 s');
    expect(formatSeconds(42.4)).toBe('42 s');
    expect(formatSeconds(185)).toBe('3 min 05 s');
    expect(formatSeconds(null)).toBe('');
  });
});

describe('PipelinesModel', () => {
  it('keeps the server message of a refused start and starts nothing', async () => {
    const message = "cd4ml-pipeline.yaml: step 'train': unknown parameter 'depth'";
    const server = new FakeServer()
      .on('GET', 'pipelines', [200, { experiment: 'x', pipelines: [] }])
      .on('GET', 'pipelines/file', [200, FILE])
      .on('POST', 'pipelines/jobs', [400, { message }]);
    const model = new PipelinesModel(server.settings);
    await model.refresh();
    expect(model.file?.file).toBe('cd4ml-pipeline.yaml');
    expect(await model.start({ overrides: { 'train.depth': '3' } })).toBeNull();
    expect(model.jobError).toBe(message);
    expect(model.job).toBeNull();
    expect(server.callsTo('POST', 'pipelines/jobs')[0].body).toEqual({ overrides: { 'train.depth': '3' } });
    model.dispose();
  });

  it('starts a job, and cancels it through the jobs endpoint', async () => {
    const server = new FakeServer()
      .on('GET', 'pipelines', [200, { experiment: 'x', pipelines: [] }])
      .on('GET', 'pipelines/file', [200, FILE])
      .on('POST', 'pipelines/jobs', [202, { id: 'abcdef012345' }])
      .on('GET', 'jobs/abcdef012345', [200, job('running', 1)])
      .on('DELETE', 'jobs/abcdef012345', [200, { id: 'abcdef012345', state: 'running' }]);
    const model = new PipelinesModel(server.settings);
    const started = await model.start({ overrides: { 'train.max_depth': '5' } });
    expect(started?.state).toBe('running');
    expect(await model.start({})).toBeNull(); // one at a time
    await model.cancel();
    expect(model.cancelling).toBe(true);
    expect(server.callsTo('DELETE', 'jobs/abcdef012345')).toHaveLength(1);
    model.dispose();
  });

  it('shows the newest pipeline job after a reload, not a notebook job', async () => {
    const server = new FakeServer().on('GET', 'jobs', [200, {
      jobs: [{ ...job('finished'), id: 'notebook00001', path: 'train.ipynb', kind: 'notebook' }, { ...job('finished', 2), kind: 'pipeline' }]
    }]);
    const model = new PipelinesModel(server.settings);
    await model.showLatest();
    expect(model.job?.id).toBe('abcdef012345');
    model.dispose();
  });
});
