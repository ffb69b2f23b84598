/**
 * A fake cd4ml_nb server for unit tests: `ServerConnection.makeRequest` runs for real
 * and hands its `Request` to this object's `fetch` (passed in the settings).
 */
import { ServerConnection } from '@jupyterlab/services';

export const BASE_URL = 'http://localhost:8888/base/';
export const TOKEN = 'secret-token';

export interface ICall {
  method: string;
  /** Path below `/base/cd4ml-nb/`, e.g. `jobs/abc`. */
  path: string;
  query: Record<string, string>;
  body: unknown;
  headers: Headers;
}

export type Reply = [number, unknown] | Promise<[number, unknown]>;
type Handler = (call: ICall) => Reply;

export class FakeServer {
  readonly calls: ICall[] = [];

  readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings({
    baseUrl: BASE_URL,
    token: TOKEN,
    fetch: (input: RequestInfo | URL, init?: RequestInit) => this.fetch(input, init)
  });

  /** Answer `method path` (exact path, or a pattern) with a handler or a fixed reply. */
  on(method: string, path: string | RegExp, reply: Handler | [number, unknown]): this {
    const handler: Handler = typeof reply === 'function' ? reply : () => reply;
    this._routes.unshift({ method, path, handler });
    return this;
  }

  /** Calls to one endpoint. */
  callsTo(method: string, path: string | RegExp): ICall[] {
    return this.calls.filter(call => call.method === method && matches(path, call.path));
  }

  async fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const request = input instanceof Request ? input : new Request(String(input), init);
    const url = new URL(request.url);
    const prefix = new URL(BASE_URL).pathname + 'cd4ml-nb/';
    if (!url.pathname.startsWith(prefix)) {
      return new Response('not found', { status: 404 });
    }
    const query: Record<string, string> = {};
    url.searchParams.forEach((value, key) => {
      if (!/^\d+$/.test(key)) {
        query[key] = value; // not the cache buster makeRequest appends
      }
    });
    const text = await request.text();
    const call: ICall = {
      method: request.method,
      path: decodeURIComponent(url.pathname.slice(prefix.length)),
      query,
      body: text ? JSON.parse(text) : undefined,
      headers: request.headers
    };
    this.calls.push(call);
    const route = this._routes.find(r => r.method === call.method && matches(r.path, call.path));
    if (!route) {
      return json(404, { message: `no route ${call.method} ${call.path}` });
    }
    const [status, body] = await route.handler(call);
    return json(status, body);
  }

  private _routes: { method: string; path: string | RegExp; handler: Handler }[] = [];
}

function matches(pattern: string | RegExp, path: string): boolean {
  return typeof pattern === 'string' ? pattern === path : pattern.test(path);
}

function json(status: number, body: unknown): Response {
  return new Response(body === undefined ? '' : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' }
  });
}

/** Resolve pending promise callbacks (several rounds: fetch, text(), JSON). */
export async function flush(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await new Promise(resolve => setTimeout(resolve, 0));
  }
}

/** Wait until `check` holds (polling), or fail after `timeout` ms. */
export async function waitFor(check: () => boolean, timeout = 3000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeout) {
      throw new Error('condition not met in time');
    }
    await new Promise(resolve => setTimeout(resolve, 5));
  }
}
