/**
 * Typed calls to the cd4ml_nb REST API, one function per endpoint.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { requestAPI } from './request';
import {
  API_NAMESPACE,
  ICompareRequest,
  IComparison,
  IJob,
  IJobRequest,
  IPairing,
  IParamsCheck,
  IParamsContract,
  IRunsPage,
  IRunsQuery,
  IStatus,
  ISyncResult,
  JobState,
  PairSide
} from './tokens';

/** A query string from the defined entries, `''` when there are none. */
export function queryString(
  query: Record<string, string | number | undefined | null>
): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') {
      params.append(key, String(value));
    }
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

function json(method: string, body: unknown): RequestInit {
  return { method, body: JSON.stringify(body) };
}

/** `GET /cd4ml-nb/status`: package version, git branch and tracking store. */
export function getStatus(settings: ServerConnection.ISettings): Promise<IStatus> {
  return requestAPI<IStatus>('status', settings, { method: 'GET' });
}

/** `GET /cd4ml-nb/pairing?path=P`: whether the notebook is paired and in sync. */
export function getPairing(
  settings: ServerConnection.ISettings,
  path: string
): Promise<IPairing> {
  return requestAPI<IPairing>(`pairing${queryString({ path })}`, settings, {
    method: 'GET'
  });
}

/**
 * `POST /cd4ml-nb/pairing`: pair the notebook with a `.py` and create the missing side.
 *
 * @throws {Cd4mlRequestError} 409 when the other side exists with different inputs
 */
export function pairNotebook(
  settings: ServerConnection.ISettings,
  path: string
): Promise<IPairing> {
  return requestAPI<IPairing>('pairing', settings, json('POST', { path }));
}

/**
 * `POST /cd4ml-nb/pairing/sync`: sync the pair from the side that changed, or from `keep`.
 *
 * @throws {Cd4mlRequestError} 409 with the diff when both sides changed and `keep` is not given
 */
export function syncPair(
  settings: ServerConnection.ISettings,
  path: string,
  keep?: PairSide
): Promise<ISyncResult> {
  return requestAPI<ISyncResult>('pairing/sync', settings, json('POST', keep ? { path, keep } : { path }));
}

/** `GET /cd4ml-nb/params?path=P`: the notebook's parameter contract. */
export function getParams(
  settings: ServerConnection.ISettings,
  path: string
): Promise<IParamsContract> {
  return requestAPI<IParamsContract>(`params${queryString({ path })}`, settings, {
    method: 'GET'
  });
}

/**
 * `POST /cd4ml-nb/jobs`: run a notebook as a tracked experiment.
 *
 * @returns the new job's id (the server answers 202 before the kernel starts)
 * @throws {Cd4mlRequestError} 400 listing every value that does not fit
 */
export function submitJob(
  settings: ServerConnection.ISettings,
  request: IJobRequest
): Promise<{ id: string }> {
  return requestAPI<{ id: string }>('jobs', settings, json('POST', request));
}

/** `GET /cd4ml-nb/jobs`: the newest jobs (the server pages them: 50 by default). */
export async function listJobs(settings: ServerConnection.ISettings): Promise<IJob[]> {
  const data = await requestAPI<{ jobs: IJob[] }>('jobs', settings, { method: 'GET' });
  return data.jobs;
}

/** `GET /cd4ml-nb/jobs/ID`: one job, with its progress. */
export function getJob(settings: ServerConnection.ISettings, id: string): Promise<IJob> {
  return requestAPI<IJob>(`jobs/${encodeURIComponent(id)}`, settings, {
    method: 'GET'
  });
}

/** `DELETE /cd4ml-nb/jobs/ID`: cancel a job (its kernel stops, its run ends KILLED). */
export function cancelJob(
  settings: ServerConnection.ISettings,
  id: string
): Promise<{ id: string; state: JobState }> {
  return requestAPI<{ id: string; state: JobState }>(
    `jobs/${encodeURIComponent(id)}`,
    settings,
    { method: 'DELETE' }
  );
}

/**
 * URL of `GET /cd4ml-nb/jobs/ID/html`: the executed notebook's HTML render, served
 * sandboxed (CSP) for a browser tab; the session cookie authenticates it.
 */
export function jobHtmlUrl(settings: ServerConnection.ISettings, id: string): string {
  return URLExt.join(settings.baseUrl, API_NAMESPACE, 'jobs', encodeURIComponent(id), 'html');
}

/** `GET /cd4ml-nb/runs`: a page of a branch's MLflow runs, newest first. */
export function getRuns(
  settings: ServerConnection.ISettings,
  query: IRunsQuery = {}
): Promise<IRunsPage> {
  return requestAPI<IRunsPage>(
    `runs${queryString({ ...query })}`,
    settings,
    { method: 'GET' }
  );
}

/** `POST /cd4ml-nb/params/check`: the form's texts checked by the server's parser. */
export function checkParams(
  settings: ServerConnection.ISettings,
  path: string,
  texts: Record<string, string>
): Promise<IParamsCheck> {
  return requestAPI<IParamsCheck>('params/check', settings, json('POST', { path, texts }));
}

/**
 * `POST /cd4ml-nb/compare`: two or more runs against the first (`cd4ml-nb diff` per pair,
 * metric deltas with each metric's goal, `cd4ml-nb gate` of the last run's branch).
 */
export function compareRuns(
  settings: ServerConnection.ISettings,
  request: ICompareRequest
): Promise<IComparison> {
  return requestAPI<IComparison>('compare', settings, json('POST', request));
}

/** URL of `GET /cd4ml-nb/runs/ID/html`: a run's HTML render, sandboxed (CSP). */
export function runHtmlUrl(settings: ServerConnection.ISettings, runId: string): string {
  return URLExt.join(settings.baseUrl, API_NAMESPACE, 'runs', encodeURIComponent(runId), 'html');
}
