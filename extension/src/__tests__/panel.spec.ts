import { Widget } from '@lumino/widgets';

import { ExperimentsModel } from '../model';
import { ExperimentsPanel } from '../widgets/experimentsPanel';
import { StatusItem } from '../widgets/statusItem';
import { FakeServer, waitFor } from './fakeServer';
import { CONTRACT, NOTEBOOK, contract, STATUS, exampleServer, job, pairing, run } from './fixtures';

const MARKUP = '<img src=x onerror="window.__cd4mlInjected=1">';

function byTestId<T extends HTMLElement = HTMLElement>(root: HTMLElement, id: string): T {
  const node = root.querySelector(`[data-testid="${id}"]`);
  if (!node) {
    throw new Error(`no [data-testid="${id}"]`);
  }
  return node as T;
}

/** Type into an input as a user does (React tracks the value; the event bubbles). */
function typeInto(input: HTMLInputElement | HTMLTextAreaElement, value: string): void {
  const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(input), 'value')?.set;
  setter?.call(input, value);
  input.dispatchEvent(new Event('input', { bubbles: true }));
}

/** Whether a node with this test id is rendered. */
function has(root: HTMLElement, id: string): boolean {
  return root.querySelector(`[data-testid="${id}"]`) !== null;
}

/** The views render asynchronously (React): wait until the job state shown is `text`. */
async function jobShows(root: HTMLElement, text: string): Promise<void> {
  await waitFor(() => root.querySelector('[data-testid="cd4ml-job-state"]')?.textContent === text);
}

describe('ExperimentsPanel', () => {
  let server: FakeServer;
  let model: ExperimentsModel;
  let panel: ExperimentsPanel;
  let runs: number;
  let opened: string[];
  let dashboards: number;

  beforeEach(async () => {
    server = exampleServer();
    model = new ExperimentsModel({ settings: server.settings, pollInterval: 10, checkDelay: 0 });
    opened = [];
    runs = 0;
    dashboards = 0;
    panel = new ExperimentsPanel(model, {
      run: () => {
        runs++;
        void model.run();
      },
      openPath: async path => {
        opened.push(path);
        if (path.includes('missing')) {
          throw new Error('404 Not Found');
        }
      },
      openDashboard: () => {
        dashboards++;
      }
    });
    Widget.attach(panel, document.body);
    await model.refreshStatus();
    await model.setNotebook(NOTEBOOK);
    await waitFor(() => has(panel.node, 'cd4ml-param-max_depth') && has(panel.node, 'cd4ml-branch'));
  });

  afterEach(() => {
    panel.dispose();
    model.dispose();
  });

  it('shows the branches, the pairing state and one input per parameter', async () => {
    await waitFor(() => byTestId(panel.node, 'cd4ml-pairing').textContent === 'paired ✓');
    expect(byTestId(panel.node, 'cd4ml-branch').textContent).toBe('try-random-forest');
    expect(byTestId(panel.node, 'cd4ml-base-branch').textContent).toBe('main');
    expect(byTestId(panel.node, 'cd4ml-notebook-path').textContent).toBe(NOTEBOOK);
    expect(byTestId(panel.node, 'cd4ml-pairing').textContent).toBe('paired ✓');
    expect(panel.node.querySelector('[data-testid="cd4ml-pair-button"]')).toBeNull();

    const depth = byTestId<HTMLInputElement>(panel.node, 'cd4ml-param-max_depth');
    expect(depth.value).toBe('8');
    const verbose = byTestId<HTMLInputElement>(panel.node, 'cd4ml-param-verbose');
    expect(verbose.type).toBe('checkbox');
    expect(byTestId<HTMLTextAreaElement>(panel.node, 'cd4ml-param-layers').tagName).toBe('TEXTAREA');
    expect(CONTRACT.parameters.every(p => panel.node.querySelector(`[data-testid="cd4ml-param-${p.name}"]`))).toBe(true);
  });

  it('warns that unsaved changes are not part of a run', async () => {
    expect(byTestId(panel.node, 'cd4ml-unsaved').hidden).toBe(true);
    model.setNotebookDirty(true);
    await waitFor(() => !byTestId(panel.node, 'cd4ml-unsaved').hidden);
  });

  it('shows the server check inline as the user types', async () => {
    const depth = byTestId<HTMLInputElement>(panel.node, 'cd4ml-param-max_depth');
    const error = byTestId(panel.node, 'cd4ml-param-error-max_depth');
    typeInto(depth, 'deep');
    await waitFor(() => error.textContent !== '');
    expect(error.textContent).toMatch(/whole number/);
    expect(byTestId(panel.node, 'cd4ml-param-row-max_depth').classList).toContain('cd4ml-nb-mod-invalid');
    typeInto(depth, '3');
    await waitFor(() => error.textContent === '');
    await waitFor(() => byTestId(panel.node, 'cd4ml-param-row-max_depth').classList.contains('cd4ml-nb-mod-changed'));
    expect(byTestId(panel.node, 'cd4ml-param-row-max_depth').classList).not.toContain('cd4ml-nb-mod-invalid');
  });

  it('runs, shows progress, then the links', async () => {
    let polls = 0;
    server.on('POST', 'jobs', [202, { id: 'job-1' }]);
    server.on('GET', 'jobs/job-1', () => {
      polls++;
      return polls < 2
        ? [200, job({ progress: { done: 5, total: 10 } })]
        : [200, job({ state: 'finished', progress: { done: 10, total: 10 }, metrics: { nwrmsle: 0.41 } })];
    });
    const depth = byTestId<HTMLInputElement>(panel.node, 'cd4ml-param-max_depth');
    typeInto(depth, '3');
    await waitFor(() => model.fields.some(f => f.changed));
    byTestId<HTMLButtonElement>(panel.node, 'cd4ml-run-button').click();
    expect(runs).toBe(1);
    await jobShows(panel.node, 'running');
    expect(byTestId(panel.node, 'cd4ml-progress').getAttribute('aria-valuenow')).toBe('5');
    expect(byTestId(panel.node, 'cd4ml-progress-text').textContent).toBe('5 / 10 cells');
    expect(byTestId<HTMLButtonElement>(panel.node, 'cd4ml-run-button').disabled).toBe(true);
    expect(byTestId(panel.node, 'cd4ml-cancel-button').hidden).toBe(false);

    await jobShows(panel.node, 'finished');
    expect(byTestId(panel.node, 'cd4ml-cancel-button').hidden).toBe(true);
    expect(byTestId(panel.node, 'cd4ml-job-metrics').textContent).toContain('nwrmsle');
    byTestId<HTMLButtonElement>(panel.node, 'cd4ml-open-executed').click();
    expect(opened).toEqual(['.cd4ml/runs/x/train.ipynb']);
    const link = byTestId<HTMLAnchorElement>(panel.node, 'cd4ml-mlflow-link');
    expect(link.hidden).toBe(false);
    expect(link.getAttribute('href')).toBe('http://127.0.0.1:5000/#/experiments/1/runs/run-new');
    expect(link.getAttribute('rel')).toBe('noopener noreferrer');
    expect(byTestId<HTMLButtonElement>(panel.node, 'cd4ml-run-button').disabled).toBe(false);
    expect(byTestId<HTMLAnchorElement>(panel.node, 'cd4ml-html-link').getAttribute('href')).toBe(
      'http://localhost:8888/base/cd4ml-nb/jobs/job-1/html'
    );
  });

  it('says why the executed notebook could not be opened', async () => {
    server.on('POST', 'jobs', [202, { id: 'job-1' }]);
    server.on('GET', 'jobs/job-1', [200, job({ state: 'finished', executed: '.cd4ml/runs/missing/train.ipynb' })]);
    await model.run();
    await jobShows(panel.node, 'finished');
    byTestId<HTMLButtonElement>(panel.node, 'cd4ml-open-executed').click();
    await waitFor(() => !byTestId(panel.node, 'cd4ml-open-error').hidden);
    expect(byTestId(panel.node, 'cd4ml-open-error').textContent).toMatch(/404 Not Found.*hidden folder/);
  });

  it('links the run to the MLflow UI the server proxies when none is configured', async () => {
    server.on('GET', 'status', [200, { ...STATUS, mlflow_ui_url: null, mlflow_ui_proxy: 'cd4ml-nb/mlflow/' }]);
    server.on('POST', 'jobs', [202, { id: 'job-1' }]);
    server.on('GET', 'jobs/job-1', [200, job({ state: 'finished' })]);
    await model.refreshStatus();
    await model.run();
    await jobShows(panel.node, 'finished');
    const link = byTestId<HTMLAnchorElement>(panel.node, 'cd4ml-mlflow-link');
    expect(link.hidden).toBe(false);
    const href = link.getAttribute('href') ?? '';
    expect(href.startsWith(server.settings.baseUrl)).toBe(true);
    expect(href).toMatch(/\/cd4ml-nb\/mlflow\/#\/experiments\/[^/]+\/runs\/[^/]+$/);
  });

  describe('sync of a pair out of sync', () => {
    const DIFF = '--- train.ipynb\n+++ train.py\n-print(x * 2)\n+print(x + 1)\n';

    it('offers Sync with the diff when one side changed', async () => {
      server.on('GET', 'pairing', [200, pairing({ in_sync: false, newer: 'text', basis: 'git HEAD', diff: DIFF })]);
      server.on('POST', 'pairing/sync', [200, { ...pairing(), diff: null, done: 'updated notebooks/train.ipynb from train.py (git HEAD)' }]);
      await model.refreshPairing();
      await waitFor(() => has(panel.node, 'cd4ml-pairing-hint'));
      expect(byTestId(panel.node, 'cd4ml-pairing-hint').textContent).toMatch(/\.py changed: sync writes the \.ipynb/);
      expect(byTestId(panel.node, 'cd4ml-pairing-diff').textContent).toContain('+print(x + 1)');
      expect(panel.node.querySelector('[data-testid="cd4ml-sync-keep-text"]')).toBeNull();
      const synced: string[] = [];
      model.changed.connect((_, change) => synced.push(change));
      byTestId<HTMLButtonElement>(panel.node, 'cd4ml-sync-button').click();
      await waitFor(() => model.syncDone !== null);
      expect(server.callsTo('POST', 'pairing/sync')[0].body).toEqual({ path: NOTEBOOK });
      expect(synced).toContain('synced');
      await waitFor(() => has(panel.node, 'cd4ml-sync-done'));
      expect(byTestId(panel.node, 'cd4ml-sync-done').textContent).toMatch(/^updated notebooks\/train.ipynb/);
      expect(panel.node.querySelector('[data-testid="cd4ml-sync-actions"]')).toBeNull();
      expect(panel.node.querySelector('[data-testid="cd4ml-pairing-diff"]')).toBeNull();
    });

    it('asks which side to keep when both changed, and sends the choice', async () => {
      server.on('GET', 'pairing', [200, pairing({ in_sync: false, conflict: true, basis: 'the last cd4ml-nb sync', diff: DIFF })]);
      server.on('POST', 'pairing/sync', [200, { ...pairing(), diff: null, done: 'updated notebooks/train.py from train.ipynb (kept as asked)' }]);
      await model.refreshPairing();
      await waitFor(() => has(panel.node, 'cd4ml-sync-keep-text'));
      expect(panel.node.querySelector('[data-testid="cd4ml-sync-button"]')).toBeNull();
      expect(byTestId(panel.node, 'cd4ml-sync-keep-text').textContent).toBe('Keep .py');
      expect(byTestId(panel.node, 'cd4ml-sync-keep-ipynb').textContent).toBe('Keep .ipynb');
      expect(byTestId<HTMLDetailsElement>(panel.node, 'cd4ml-pairing-diff').open).toBe(true);
      byTestId<HTMLButtonElement>(panel.node, 'cd4ml-sync-keep-ipynb').click();
      await waitFor(() => model.syncDone !== null);
      expect(server.callsTo('POST', 'pairing/sync')[0].body).toEqual({ path: NOTEBOOK, keep: 'ipynb' });
      expect(model.pairing?.in_sync).toBe(true);
    });

    it('refuses to sync unsaved work, and shows a refusal with its diff', async () => {
      server.on('GET', 'pairing', [200, pairing({ in_sync: false, conflict: true, diff: DIFF })]);
      await model.refreshPairing();
      model.setNotebookDirty(true);
      await waitFor(() => has(panel.node, 'cd4ml-sync-blocked'));
      expect(byTestId<HTMLButtonElement>(panel.node, 'cd4ml-sync-keep-text').disabled).toBe(true);
      expect(byTestId(panel.node, 'cd4ml-sync-blocked').textContent).toMatch(/Save the notebook first/);
      model.setNotebookDirty(false);
      await waitFor(() => !byTestId<HTMLButtonElement>(panel.node, 'cd4ml-sync-keep-text').disabled);
      server.on('POST', 'pairing/sync', [409, { message: 'both changed since the last cd4ml-nb sync', diff: DIFF }]);
      await model.sync();
      await waitFor(() => has(panel.node, 'cd4ml-pairing-error'));
      expect(byTestId(panel.node, 'cd4ml-pairing-error').textContent).toBe('both changed since the last cd4ml-nb sync');
      expect(byTestId(panel.node, 'cd4ml-pairing-diff').textContent).toContain('-print(x * 2)');
    });
  });

  it('has no MLflow link without an MLflow UI', async () => {
    server.on('GET', 'status', [200, { ...STATUS, mlflow_ui_url: null, mlflow_ui_proxy: null }]);
    server.on('POST', 'jobs', [202, { id: 'job-1' }]);
    server.on('GET', 'jobs/job-1', [200, job({ state: 'finished' })]);
    await model.refreshStatus();
    await model.run();
    await jobShows(panel.node, 'finished');
    expect(byTestId(panel.node, 'cd4ml-mlflow-link').hidden).toBe(true);
    expect(byTestId(panel.node, 'cd4ml-mlflow-link').hasAttribute('href')).toBe(false);
  });

  it('disables Run while a value does not fit, with the reason beside the button', async () => {
    const depth = byTestId<HTMLInputElement>(panel.node, 'cd4ml-param-max_depth');
    const runButton = byTestId<HTMLButtonElement>(panel.node, 'cd4ml-run-button');
    const reason = byTestId(panel.node, 'cd4ml-run-blocked');
    expect(runButton.disabled).toBe(false);
    expect(reason.hidden).toBe(true);
    typeInto(depth, 'three');
    await waitFor(() => runButton.disabled);
    expect(reason.hidden).toBe(false);
    expect(reason.textContent).toMatch(/^max_depth: .*whole number/);
    // The reason sits beside the button, in the same row.
    expect(reason.parentElement).toBe(runButton.parentElement);
    typeInto(depth, '3');
    await waitFor(() => !runButton.disabled);
    expect(reason.hidden).toBe(true);
    expect(reason.textContent).toBe('');
  });

  it('shows "cancelling…" as soon as Cancel is pressed, then "cancelled" (not how it was stopped)', async () => {
    let release: () => void = () => undefined;
    let killed = false;
    server.on('POST', 'jobs', [202, { id: 'job-1' }]);
    server.on('GET', 'jobs/job-1', () => [
      200,
      job({ state: killed ? 'killed' : 'running', error: killed ? 'stopped by SIGTERM' : null })
    ]);
    server.on('DELETE', 'jobs/job-1', () => new Promise(resolve => {
      release = () => {
        killed = true;
        resolve([200, { id: 'job-1', state: 'running' }]);
      };
    }));
    await model.run();
    await jobShows(panel.node, 'running');
    const state = byTestId(panel.node, 'cd4ml-job-state');
    byTestId<HTMLButtonElement>(panel.node, 'cd4ml-cancel-button').click();
    expect(model.cancelState).toBe('cancelling');
    // Before the server has answered (the node shown is the same one, updated):
    await waitFor(() => state.textContent === 'cancelling…');
    expect(killed).toBe(false);
    expect(byTestId<HTMLButtonElement>(panel.node, 'cd4ml-cancel-button').disabled).toBe(true);
    await waitFor(() => server.callsTo('DELETE', 'jobs/job-1').length === 1);
    expect(state.textContent).toBe('cancelling…'); // still, while the server takes its time
    release();
    await waitFor(() => state.textContent === 'cancelled');
    expect(state.getAttribute('data-state')).toBe('killed');
    expect(byTestId(panel.node, 'cd4ml-job-error').hidden).toBe(true);
    expect(panel.node.textContent).not.toContain('SIGTERM');
  });

  it('offers no form, pairing or Run for an executed copy of a run', async () => {
    await model.setNotebook('cd4ml-runs/0123456789ab/train.ipynb');
    await waitFor(() => !byTestId(panel.node, 'cd4ml-executed-copy').hidden);
    expect(byTestId(panel.node, 'cd4ml-executed-copy').hidden).toBe(false);
    expect(panel.node.querySelector('[data-testid="cd4ml-param-max_depth"]')).toBeNull();
    expect(panel.node.querySelector('[data-testid="cd4ml-pair-button"]')).toBeNull();
    expect(byTestId(panel.node, 'cd4ml-run-button').closest('[hidden]')).not.toBeNull();
    expect(model.runBlocked).toMatch(/executed copy/);
    expect(await model.run()).toBeNull();
    expect(server.callsTo('GET', 'params').filter(c => c.query.path?.startsWith('cd4ml-runs'))).toHaveLength(0);
    expect(server.callsTo('GET', 'pairing').filter(c => c.query.path?.startsWith('cd4ml-runs'))).toHaveLength(0);
  });

  it('opens the dashboard from its button and counts the runs of each branch', async () => {
    byTestId<HTMLButtonElement>(panel.node, 'cd4ml-open-dashboard').click();
    expect(dashboards).toBe(1);
    await waitFor(() => byTestId(panel.node, 'cd4ml-runs-count').textContent !== '');
    expect(byTestId(panel.node, 'cd4ml-runs-count').textContent).toBe(
      'Runs of this notebook: 1 on try-random-forest, 1 on main'
    );
    expect(panel.node.querySelector('table')).toBeNull(); // no runs table squeezed in the sidebar
  });

  it("lists this branch's latest runs with their kind and why one failed, as text", async () => {
    server.on('GET', 'runs', call =>
      call.query.branch === 'main'
        ? [200, { experiment: '2', runs: [run('base-1', { experiment: '2' })], next_page_token: null }]
        : [
            200,
            {
              experiment: '1',
              runs: [
                run('failed-0123456789', { status: 'KILLED', reason: 'timeout', failed_cell: 2, message: MARKUP }),
                run('trial-0123456789', { kind: 'trial', parent_run_id: '9876543210fedcba' }),
                run('plain-0123456789'),
                run('older-0123456789')
              ],
              next_page_token: null
            }
          ]
    );
    await model.refreshRuns();
    await waitFor(() => has(panel.node, 'cd4ml-kind-failed-0123456789'));
    const items = [...byTestId(panel.node, 'cd4ml-latest-runs').querySelectorAll('li')];
    expect(items.map(li => li.getAttribute('data-run-id'))).toEqual(['failed-0123456789', 'trial-0123456789', 'plain-0123456789']);
    expect(byTestId(panel.node, 'cd4ml-kind-plain-0123456789').textContent).toBe('run');
    const trial = byTestId(panel.node, 'cd4ml-kind-trial-0123456789');
    expect(trial.textContent).toBe('trial');
    expect(trial.title).toBe('Trial of sweep 98765432');
    expect(byTestId(panel.node, 'cd4ml-failure-failed-0123456789').textContent).toBe(`timeout at cell 2: ${MARKUP}`);
    expect(items[0].textContent).toContain('KILLED');
    expect(has(panel.node, 'cd4ml-failure-trial-0123456789')).toBe(false);
    expect(panel.node.querySelectorAll('img')).toHaveLength(0);
    expect((window as any).__cd4mlInjected).toBeUndefined();
    expect(panel.node.querySelector('table')).toBeNull();
  });

  it('renders untrusted strings as text only', async () => {
    server.on('GET', 'status', [200, { ...STATUS, branch: MARKUP, base_branch: MARKUP }]);
    server.on('GET', 'pairing', [200, pairing({ paired: false, missing: 'text' })]);
    server.on('POST', 'pairing', [409, { message: MARKUP, diff: MARKUP }]);
    server.on('GET', 'params', [
      200,
      contract([{ name: 'x', type: 'str', default: MARKUP, help: MARKUP, nullable: false, expression: null }], 0)
    ]);
    server.on('GET', 'runs', [
      200,
      { experiment: '1', runs: [run('r1', { params: { x: MARKUP }, status: MARKUP, reason: MARKUP })], next_page_token: null }
    ]);
    server.on('POST', 'jobs', [202, { id: 'j' }]);
    server.on('GET', 'jobs/j', [200, job({ id: 'j', state: 'failed', error: MARKUP, path: MARKUP, parameters: { x: MARKUP } })]);

    await model.refreshStatus();
    await model.setNotebook(null);
    await model.setNotebook(MARKUP);
    await model.pair();
    await model.run();
    await jobShows(panel.node, 'failed');
    await waitFor(() => has(panel.node, 'cd4ml-pairing-error'));

    const text = panel.node.textContent ?? '';
    expect(text).toContain(MARKUP);
    expect(byTestId(panel.node, 'cd4ml-job-error').textContent).toBe(MARKUP);
    expect(byTestId(panel.node, 'cd4ml-pairing-error').textContent).toBe(MARKUP);
    expect(panel.node.querySelectorAll('img')).toHaveLength(0);
    expect((window as any).__cd4mlInjected).toBeUndefined();
  });
});

describe('StatusItem', () => {
  it('shows the branch and the pairing state as text', async () => {
    const server = exampleServer();
    server.on('GET', 'pairing', [200, pairing({ in_sync: false, newer: 'text' })]);
    const model = new ExperimentsModel({ settings: server.settings });
    const item = new StatusItem(model);
    await waitFor(() => item.node.textContent === 'cd4ml: …');
    await model.refreshStatus();
    await waitFor(() => item.node.textContent === 'cd4ml: try-random-forest');
    await model.setNotebook(NOTEBOOK);
    await waitFor(() => item.node.textContent === 'cd4ml: try-random-forest · out of sync');
    expect(item.hasClass('cd4ml-nb-mod-out-of-sync')).toBe(true);
    expect(item.node.title).toContain('Base branch: main');
    expect(item.node.title).toContain(`Notebook: ${NOTEBOOK} (out of sync)`);

    server.on('GET', 'status', [200, { ...STATUS, branch: MARKUP }]);
    await model.refreshStatus();
    await waitFor(() => (item.node.textContent ?? '').includes(MARKUP));
    expect(item.node.querySelectorAll('img')).toHaveLength(0);
    item.dispose();
    model.dispose();
  });

  it('shows that the server did not answer', async () => {
    const server = new FakeServer();
    const model = new ExperimentsModel({ settings: server.settings });
    const item = new StatusItem(model);
    await model.refreshStatus();
    await waitFor(() => item.node.textContent === 'cd4ml: unavailable');
    expect(item.hasClass('cd4ml-nb-mod-error')).toBe(true);
    item.dispose();
    model.dispose();
  });
});
