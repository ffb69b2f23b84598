import {
  failureOf,
  formatMetric,
  formatParams,
  formatShortTime,
  formatTime,
  kindOf,
  kindsOf,
  mergeRuns,
  metricNames,
  isWebUrl,
  mlflowRunUrl,
  mlflowUiBase,
  sortRuns
} from '../runs';
import { IBranchRun } from '../tokens';
import { run } from './fixtures';

function row(id: string, side: 'current' | 'base', overrides = {}): IBranchRun {
  return { ...run(id, overrides), branch: side === 'current' ? 'feature' : 'main', side };
}

describe('runs', () => {
  const rows = [
    row('a', 'current', { start_time: 3, status: 'FINISHED', metrics: { nwrmsle: 0.5 }, params: { max_depth: '3' } }),
    row('b', 'base', { start_time: 1, status: 'FAILED', metrics: {}, params: { max_depth: '10' } }),
    row('c', 'current', { start_time: 2, status: 'FINISHED', metrics: { nwrmsle: 0.4, r2: 0.9 }, params: {} })
  ];

  it('merges sections newest first, once per run', () => {
    const merged = mergeRuns([
      { branch: 'feature', side: 'current', runs: [run('x', { start_time: 5 }), run('y', { start_time: 1 })], nextPageToken: null, error: null },
      { branch: 'main', side: 'base', runs: [run('z', { start_time: 3 }), run('x', { start_time: 5 })], nextPageToken: null, error: null }
    ]);
    expect(merged.map(r => [r.run_id, r.side])).toEqual([
      ['x', 'current'],
      ['z', 'base'],
      ['y', 'current']
    ]);
  });

  it('collects metric names', () => {
    expect(metricNames(rows)).toEqual(['nwrmsle', 'r2']);
  });

  it('sorts by a metric, runs without it last in both directions', () => {
    expect(sortRuns(rows, 'metric:nwrmsle', 'asc').map(r => r.run_id)).toEqual(['c', 'a', 'b']);
    expect(sortRuns(rows, 'metric:nwrmsle', 'desc').map(r => r.run_id)).toEqual(['a', 'c', 'b']);
  });

  it('sorts by start time, status, branch and parameters', () => {
    expect(sortRuns(rows, 'start_time', 'desc').map(r => r.run_id)).toEqual(['a', 'c', 'b']);
    expect(sortRuns(rows, 'start_time', 'asc').map(r => r.run_id)).toEqual(['b', 'c', 'a']);
    expect(sortRuns(rows, 'status', 'asc').map(r => r.run_id)).toEqual(['b', 'a', 'c']);
    expect(sortRuns(rows, 'branch', 'asc').map(r => r.run_id)).toEqual(['a', 'c', 'b']);
    // numeric-aware: max_depth=3 before max_depth=10
    expect(sortRuns(rows, 'param:max_depth', 'asc').map(r => r.run_id)).toEqual(['a', 'b', 'c']);
    expect(sortRuns(rows, 'params', 'asc').map(r => r.run_id)).toEqual(['c', 'a', 'b']);
  });

  it('does not change its input', () => {
    const copy = [...rows];
    sortRuns(rows, 'status', 'asc');
    expect(rows).toEqual(copy);
  });

  it('links a run to the MLflow UI only when one is configured', () => {
    expect(mlflowRunUrl('http://127.0.0.1:5000/', '3', 'abc')).toBe('http://127.0.0.1:5000/#/experiments/3/runs/abc');
    expect(mlflowRunUrl(null, '3', 'abc')).toBeNull();
    expect(mlflowRunUrl('http://x', null, 'abc')).toBeNull();
    expect(mlflowRunUrl('javascript:alert(1)//', '3', 'abc')).toBeNull();
    expect(mlflowRunUrl('https://m/x', '3', 'a/b')).toBe('https://m/x/#/experiments/3/runs/a%2Fb');
  });

  it('prefers the configured MLflow UI, else the proxied one under the base URL', () => {
    const base = 'http://127.0.0.1:8888/user/a%40b/';
    expect(mlflowUiBase({ mlflow_ui_url: 'http://m:5000', mlflow_ui_proxy: 'cd4ml-nb/mlflow/' }, base)).toBe('http://m:5000');
    expect(mlflowUiBase({ mlflow_ui_url: null, mlflow_ui_proxy: 'cd4ml-nb/mlflow/' }, base)).toBe(
      'http://127.0.0.1:8888/user/a%40b/cd4ml-nb/mlflow/'
    );
    expect(mlflowUiBase({ mlflow_ui_url: null, mlflow_ui_proxy: null }, base)).toBeNull();
    expect(mlflowUiBase(null, base)).toBeNull();
    // A repository's pyproject.toml may set mlflow_ui_url: anything but http(s) is never used.
    for (const bad of ['javascript:alert(1)', 'JavaScript:alert(1)//http://m', ' javascript:x', 'data:text/html,x',
      '//evil.example/', 'http:\\\\evil', 'http://m/\nx', 'ftp://m/']) {
      expect(mlflowUiBase({ mlflow_ui_url: bad, mlflow_ui_proxy: null }, base)).toBeNull();
      expect(mlflowUiBase({ mlflow_ui_url: bad, mlflow_ui_proxy: 'cd4ml-nb/mlflow/' }, base)).toBeNull();
      expect(isWebUrl(bad)).toBe(false);
      expect(mlflowRunUrl(bad, '3', 'abc')).toBeNull();
    }
    expect(isWebUrl('HTTPS://m.example:5000/x')).toBe(true);
    expect(mlflowRunUrl(mlflowUiBase({ mlflow_ui_url: null, mlflow_ui_proxy: 'cd4ml-nb/mlflow/' }, base), '1', 'r')).toBe(
      'http://127.0.0.1:8888/user/a%40b/cd4ml-nb/mlflow/#/experiments/1/runs/r'
    );
  });

  it('formats parameters and metrics', () => {
    expect(formatParams({ b: '2', a: '1' })).toBe('a=1, b=2');
    expect(formatParams(null)).toBe('');
    expect(formatMetric(0.123456789)).toBe('0.12346');
    expect(formatMetric(3)).toBe('3');
    expect(formatMetric(0.00001234)).toBe('1.234e-5');
    expect(formatMetric(undefined)).toBe('');
    const epoch = new Date(2026, 0, 2, 3, 4, 5).getTime() / 1000;
    expect(formatTime(epoch)).toBe('2026-01-02 03:04:05');
    expect(formatShortTime(epoch)).toBe('01-02 03:04');
    expect(formatTime(null)).toBe('');
  });
});

describe('kinds and failures', () => {
  it('reads a run without a kind (an older server) as a plain run', () => {
    expect(kindOf(run('a', { kind: 'trial' }))).toBe('trial');
    expect(kindOf(run('a', { kind: undefined }))).toBe('run');
    expect(kindOf(run('a', { kind: '' }))).toBe('run');
  });

  it('lists the kinds present, known ones in their order, others after', () => {
    const runs = [run('a', { kind: 'trial' }), run('b', { kind: 'zeta' }), run('c'), run('d', { kind: 'sweep' }), run('e', { kind: 'ci' })];
    expect(kindsOf(runs)).toEqual(['run', 'trial', 'sweep', 'ci', 'zeta']);
    expect(kindsOf([])).toEqual([]);
  });

  it('sorts by kind', () => {
    const rows = [row('a', 'current', { kind: 'trial' }), row('b', 'current', { kind: 'ci' }), row('c', 'current', {})];
    expect(sortRuns(rows, 'kind', 'asc').map(r => r.run_id)).toEqual(['b', 'c', 'a']);
  });

  it('says why a FAILED or KILLED run did not finish, nothing for others', () => {
    const failed = run('a', { status: 'FAILED', reason: 'cell-exception', failed_cell: 0, message: 'ValueError: x' });
    expect(failureOf(failed)).toEqual({ reason: 'cell-exception', cell: 0, message: 'ValueError: x' });
    expect(failureOf(run('b', { status: 'KILLED', reason: 'timeout' }))).toEqual({ reason: 'timeout', cell: null, message: null });
    expect(failureOf(run('c', { status: 'FINISHED', reason: 'cell-exception', message: 'stale' }))).toBeNull();
    expect(failureOf(run('d', { status: 'FAILED' }))).toBeNull();
    expect(failureOf(run('e', { status: 'FAILED', failed_cell: undefined, message: undefined }))).toBeNull();
  });
});
