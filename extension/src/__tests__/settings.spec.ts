import { ISettingRegistry, SettingRegistry } from '@jupyterlab/settingregistry';
import { IDataConnector } from '@jupyterlab/statedb';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { DashboardModel } from '../dashboard/model';
import { ExperimentsModel } from '../model';
import {
  Cd4mlSettings,
  DEFAULT_SETTINGS,
  followDashboardSettings,
  followExperimentsSettings,
  readSettings,
  runsFrequency,
  SETTINGS_ID,
  statusFrequency
} from '../settings';
import { DashboardView } from '../widgets/dashboard';
import { FakeServer, waitFor } from './fakeServer';
import { exampleServer, job, NOTEBOOK, run, STATUS } from './fixtures';

// The charts are vega-embed's (drawn in a real browser by test_browser_dashboard.py): not here.
jest.mock('vega-embed', () => ({
  __esModule: true,
  default: jest.fn(() => Promise.resolve({ finalize: () => undefined }))
}));

/** The schema the extension ships, as the registry validates the user's settings against it. */
const SCHEMA = jest.requireActual<ISettingRegistry.ISchema>('../../schema/model.json');

/** The user's settings kept in memory, as the server's settings API keeps their JSON. */
class MemoryConnector implements IDataConnector<ISettingRegistry.IPlugin, string> {
  raw = '{}';

  async fetch(id: string): Promise<ISettingRegistry.IPlugin> {
    return { id, data: { composite: {}, user: {} }, raw: this.raw, schema: SCHEMA, version: '0.1.0' };
  }

  async list(): Promise<{ ids: string[]; values: ISettingRegistry.IPlugin[] }> {
    return { ids: [], values: [] };
  }

  async save(_id: string, raw: string): Promise<void> {
    this.raw = raw;
  }

  async remove(): Promise<void> {
    return undefined;
  }
}

/** The registry and, as the Settings Editor holds them, the settings of the plugin. */
async function registry(): Promise<{ registry: SettingRegistry; editor: ISettingRegistry.ISettings }> {
  const registry = new SettingRegistry({ connector: new MemoryConnector() });
  return { registry, editor: await registry.load(SETTINGS_ID) };
}

/** 30 runs of this branch, 2 of main; every run logs mae and nwrmsle. */
function dashboardServer(): FakeServer {
  const server = exampleServer();
  server.on('GET', 'runs', call =>
    call.query.branch
      ? [200, { experiment: '2', runs: [run(`${call.query.branch}-1`), run(`${call.query.branch}-2`)], next_page_token: null }]
      : [200, { experiment: '1', runs: Array.from({ length: 30 }, (_, i) => run(`cur-${i}`, { start_time: i })), next_page_token: null }]
  );
  return server;
}

function rowsOf(view: DashboardView): number {
  return view.node.querySelectorAll('[data-testid="cd4ml-dashboard-table"] tbody tr').length;
}

describe('readSettings', () => {
  it('keeps the values that fit, the default for the others', () => {
    expect(readSettings(null)).toEqual(DEFAULT_SETTINGS);
    expect(readSettings({ pageSize: 'ten', jobPollInterval: -1, runsPollInterval: 5000, defaultMetric: 'mae', baseBranch: 3 })).toEqual({
      ...DEFAULT_SETTINGS,
      runsPollInterval: 5000,
      defaultMetric: 'mae'
    });
  });

  it('takes the defaults when there is no registry', async () => {
    const settings = await Cd4mlSettings.load(null);
    expect(settings.values).toEqual(DEFAULT_SETTINGS);
  });
});

describe('settings changed in the Settings Editor apply without a reload', () => {
  it('to an open dashboard: rows per page, default metric, base branch and refresh interval', async () => {
    const server = dashboardServer();
    const { registry: reg, editor } = await registry();
    const settings = await Cd4mlSettings.load(reg);
    const model = new DashboardModel({ settings: server.settings, ...settings.values });
    const poll = new Poll({ factory: () => model.refresh(), frequency: runsFrequency(settings.values), standby: 'never' });
    const view = new DashboardView(model, { openExecuted: () => undefined, mlflowRunUrl: () => null });
    Widget.attach(view, document.body);
    const following = followDashboardSettings(settings, model, poll);
    await waitFor(() => rowsOf(view) === 25);
    expect(model.metric).toBe('mae');

    await editor.set('pageSize', 10);
    await waitFor(() => rowsOf(view) === 10);
    expect(model.pageSize).toBe(10);
    expect(model.pageCount).toBe(4);

    await editor.set('defaultMetric', 'nwrmsle');
    await waitFor(() => model.metric === 'nwrmsle');
    await waitFor(
      () => view.node.querySelector<HTMLSelectElement>('[data-testid="cd4ml-dashboard-metric"]')?.value === 'nwrmsle'
    );

    await editor.set('baseBranch', 'release');
    await waitFor(() => model.runs.some(r => r.run_id === 'release-1'));
    expect(model.baseBranch).toBe('release');
    expect(model.runs.some(r => r.run_id === 'main-1')).toBe(false);

    await editor.set('runsPollInterval', 4000);
    await waitFor(() => poll.frequency.interval === 4000);
    expect(poll.frequency).toEqual({ interval: 4000, backoff: true, max: 32000 });

    following.dispose();
    await editor.set('pageSize', 50);
    await new Promise(resolve => setTimeout(resolve, 50));
    expect(model.pageSize).toBe(10); // a closed dashboard follows nothing
    poll.dispose();
    view.dispose();
    model.dispose();
    settings.dispose();
  });

  it('to the branch poll and to the job running now', async () => {
    const server = exampleServer();
    let reads = 0;
    server
      .on('POST', 'jobs', [202, { id: 'job-1' }])
      .on('GET', 'jobs/job-1', () => [200, job({ state: ++reads < 2 ? 'running' : 'finished' })]);
    const { registry: reg, editor } = await registry();
    await editor.set('jobPollInterval', 100_000); // one read now, the next in 100 s
    const settings = await Cd4mlSettings.load(reg);
    const model = new ExperimentsModel({ settings: server.settings, pollInterval: settings.values.jobPollInterval, checkDelay: 0 });
    const statusPoll = new Poll({ factory: () => model.refreshStatus(), frequency: statusFrequency(settings.values), standby: 'never' });
    const following = followExperimentsSettings(settings, model, statusPoll);
    await model.setNotebook(NOTEBOOK);
    await model.run();
    await waitFor(() => reads === 1);
    await new Promise(resolve => setTimeout(resolve, 100));
    expect(model.job?.state).toBe('running');

    await editor.set('jobPollInterval', 200);
    expect(model.pollInterval).toBe(200);
    await waitFor(() => model.job?.state === 'finished');

    // Longer than the 30 s Poll allows by default: the branch poll takes it.
    await editor.set('statusPollInterval', 120_000);
    expect(statusPoll.frequency).toEqual({ interval: 120_000, backoff: false, max: 120_000 });
    expect(model.status).toEqual(STATUS);

    following.dispose();
    statusPoll.dispose();
    model.dispose();
    settings.dispose();
  });
});
