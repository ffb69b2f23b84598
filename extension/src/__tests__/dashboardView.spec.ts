import { Widget } from '@lumino/widgets';

import { DashboardModel } from '../dashboard/model';
import { DashboardView } from '../widgets/dashboard';
import { FakeServer, waitFor } from './fakeServer';
import { run, STATUS } from './fixtures';

// The charts are vega-embed's (drawn in a real browser by test_browser_dashboard.py): not here.
jest.mock('vega-embed', () => ({
  __esModule: true,
  default: jest.fn(() => Promise.resolve({ finalize: () => undefined }))
}));

const MARKUP = '<img src=x onerror="window.__cd4mlInjected=1">';
const SWEEP = 'abcdef0123456789abcdef0123456789';

function rowsOf(view: DashboardView): string[] {
  return [...view.node.querySelectorAll('[data-testid="cd4ml-dashboard-table"] tbody tr')].map(
    tr => tr.getAttribute('data-run-id') ?? ''
  );
}

/** Choose an option of a select as a user does (React listens to the bubbling change). */
function choose(select: HTMLSelectElement, value: string): void {
  select.value = value;
  select.dispatchEvent(new Event('change', { bubbles: true }));
}

describe('DashboardView kinds and failures', () => {
  let server: FakeServer;
  let model: DashboardModel;
  let view: DashboardView;

  beforeEach(async () => {
    server = new FakeServer();
    server.on('GET', 'status', [200, STATUS]).on('GET', 'runs', call =>
      call.query.branch === 'main'
        ? [200, { experiment: '2', runs: [run('base-run', { experiment: '2', start_time: 1_600_000_000 })], next_page_token: null }]
        : [
            200,
            {
              experiment: '1',
              runs: [
                run('cur-run', { start_time: 1_700_000_003 }),
                run('cur-failed', {
                  start_time: 1_700_000_002,
                  status: 'FAILED',
                  reason: 'cell-exception',
                  failed_cell: 3,
                  message: MARKUP
                }),
                run('cur-trial', { start_time: 1_700_000_001, kind: 'trial', parent_run_id: SWEEP }),
                run('cur-sweep', { start_time: 1_700_000_000, kind: 'sweep', reason: MARKUP })
              ],
              next_page_token: null
            }
          ]
    );
    model = new DashboardModel({ settings: server.settings });
    view = new DashboardView(model, { openExecuted: () => undefined, mlflowRunUrl: () => null });
    Widget.attach(view, document.body);
    await model.refresh();
    await waitFor(() => rowsOf(view).length > 0);
  });

  afterEach(() => {
    view.dispose();
    model.dispose();
  });

  it('lists plain runs by default, each with its kind label', () => {
    const select = view.node.querySelector<HTMLSelectElement>('[data-testid="cd4ml-filter-kind"]')!;
    expect(select.value).toBe('run');
    expect([...select.options].map(o => [o.value, o.textContent])).toEqual([
      ['', 'All kinds'],
      ['run', 'run'],
      ['trial', 'trial'],
      ['sweep', 'sweep']
    ]);
    expect(rowsOf(view)).toEqual(['cur-run', 'cur-failed', 'base-run']);
    const badge = view.node.querySelector('[data-testid="cd4ml-kind-cur-run"]')!;
    expect(badge.textContent).toBe('run');
    expect(badge.closest('td')?.getAttribute('data-kind')).toBe('run');
  });

  it('shows the trial, named after its sweep, when all kinds are chosen', async () => {
    choose(view.node.querySelector<HTMLSelectElement>('[data-testid="cd4ml-filter-kind"]')!, '');
    await waitFor(() => rowsOf(view).length === 5);
    expect(model.filter.kind).toBe('');
    const trial = view.node.querySelector('[data-testid="cd4ml-kind-cur-trial"]')!;
    expect(trial.textContent).toBe('trial');
    expect(trial.getAttribute('title')).toBe('Trial of sweep abcdef01');
    expect(trial.getAttribute('data-parent')).toBe(SWEEP);
    expect(view.node.querySelector('[data-testid="cd4ml-dashboard-count"]')?.textContent).toBe('5 runs');

    choose(view.node.querySelector<HTMLSelectElement>('[data-testid="cd4ml-filter-kind"]')!, 'sweep');
    await waitFor(() => rowsOf(view).length === 1);
    expect(rowsOf(view)).toEqual(['cur-sweep']);
    // A sweep that finished says nothing about failing, whatever its tags hold.
    expect(view.node.querySelector('[data-testid="cd4ml-failure-cur-sweep"]')).toBeNull();
  });

  it("shows a failed run's reason, cell and message as text, never as HTML", () => {
    const failure = view.node.querySelector('[data-testid="cd4ml-failure-cur-failed"]')!;
    expect(failure.textContent).toBe(`cell-exception at cell 3: ${MARKUP}`);
    expect(failure.getAttribute('data-reason')).toBe('cell-exception');
    expect(failure.getAttribute('data-failed-cell')).toBe('3');
    expect(failure.closest('td')?.getAttribute('data-status')).toBe('FAILED');
    expect(view.node.querySelectorAll('img')).toHaveLength(0);
    expect((window as any).__cd4mlInjected).toBeUndefined();
    expect(view.node.querySelector('[data-testid="cd4ml-failure-cur-run"]')).toBeNull();
  });

  it('says when no run has the kind chosen', async () => {
    model.setFilter({ kind: 'pipeline' });
    await waitFor(() => rowsOf(view).length === 0);
    const hint = view.node.querySelector('[data-testid="cd4ml-dashboard-empty"]')!;
    expect(hint.textContent).toBe('No run of kind pipeline on these branches: choose "All kinds" to see the others.');
    expect(view.node.querySelector<HTMLSelectElement>('[data-testid="cd4ml-filter-kind"]')!.value).toBe('pipeline');
  });
});
