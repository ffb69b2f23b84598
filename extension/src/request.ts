/**
 * Transport: every call to the cd4ml_nb server extension goes through `requestAPI`.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { API_NAMESPACE } from './tokens';

/**
 * Error raised when the server answers with a non-2xx status.
 *
 * `message` is the server's own message (Jupyter Server's `{"message": …}`
 * error body) when it sent one, otherwise the HTTP status text.
 */
export class Cd4mlRequestError extends ServerConnection.ResponseError {
  constructor(response: Response, message: string, traceback = '', body: unknown = null) {
    super(response, message, traceback);
    this.name = 'Cd4mlRequestError';
    this.body = body;
  }

  /** The decoded error body (e.g. `{"message": …, "diff": …}` of a pairing conflict). */
  readonly body: unknown;

  /** HTTP status code of the failed response. */
  get status(): number {
    return this.response.status;
  }
}

/**
 * Call a cd4ml_nb REST endpoint and decode its JSON body.
 *
 * @param endPoint path below `/cd4ml-nb/`, e.g. `status`
 * @param settings server connection settings (base URL, token, XSRF)
 * @param init fetch options (method, body…)
 * @throws {ServerConnection.NetworkError} when the server cannot be reached
 * @throws {Cd4mlRequestError} when the server answers with an error status
 */
export async function requestAPI<T>(
  endPoint: string,
  settings: ServerConnection.ISettings,
  init: RequestInit = {}
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_NAMESPACE, endPoint);

  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }

  const text = await response.text();
  let data: unknown = undefined;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }

  if (!response.ok) {
    const body = (typeof data === 'object' && data !== null ? data : {}) as {
      message?: unknown;
      reason?: unknown;
      traceback?: unknown;
    };
    const message =
      typeof body.message === 'string' && body.message
        ? body.message
        : typeof body.reason === 'string' && body.reason
          ? body.reason
          : typeof data === 'string' && data
            ? data
            : `${response.status} ${response.statusText}`;
    const traceback = typeof body.traceback === 'string' ? body.traceback : '';
    throw new Cd4mlRequestError(response, message, traceback, data ?? null);
  }

  return data as T;
}

/** The message of an error, for display. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    return error.message || error.name;
  }
  return String(error);
}

/** The HTTP status of a failed request, `null` for any other error (e.g. the network's). */
export function httpStatus(error: unknown): number | null {
  return error instanceof Cd4mlRequestError ? error.status : null;
}
