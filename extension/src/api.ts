/**
 * Typed calls to the cd4ml_nb REST API, one function per endpoint.
 */
import { ServerConnection } from '@jupyterlab/services';

import { requestAPI } from './request';
import { IStatus } from './tokens';

/** `GET /cd4ml-nb/status`: package version, git branch and tracking store. */
export function getStatus(settings: ServerConnection.ISettings): Promise<IStatus> {
  return requestAPI<IStatus>('status', settings, { method: 'GET' });
}
