/**
 * The parameter form's values: how a declared parameter is shown in an input and how
 * what the user typed becomes a typed JSON value, checked *before* anything is sent.
 *
 * The rules follow `cd4ml_nb/params.py`: `None`/`null`/`~` is null for a nullable
 * parameter, ints are whole numbers, a float takes any number, lists and dicts are
 * JSON, `list[T]` checks every item, `any` takes JSON or else the text itself.
 */
import { IParameter } from './tokens';

/** The kind of input a parameter gets. */
export type InputKind = 'checkbox' | 'tristate' | 'int' | 'float' | 'text' | 'json';

/** A parsed form value: the value, or why it does not fit. */
export type ParsedValue =
  | { ok: true; value: unknown; useDefault: boolean }
  | { ok: false; error: string };

const NULL_WORDS = ['none', 'null', '~'];
const INT_PATTERN = /^[+-]?\d+$/;
const FLOAT_PATTERN = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const LIST_OF = /^list\[(int|float|str|bool)\]$/;

/** The input a parameter is edited with. */
export function inputKind(parameter: IParameter): InputKind {
  switch (parameter.type) {
    case 'bool':
      return parameter.nullable ? 'tristate' : 'checkbox';
    case 'int':
      return 'int';
    case 'float':
      return 'float';
    case 'str':
      return 'text';
    case 'list':
    case 'dict':
      return 'json';
    default:
      return LIST_OF.test(parameter.type) ? 'json' : 'text';
  }
}

/** A short description of what a parameter takes, e.g. `int or None`. */
export function describeType(parameter: IParameter): string {
  return parameter.nullable && parameter.type !== 'any'
    ? `${parameter.type} or None`
    : parameter.type;
}

function looksLikeJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** What the input shows for the notebook's default. */
export function defaultRaw(parameter: IParameter): string | boolean {
  if (parameter.expression !== null) {
    return ''; // the expression is shown as a placeholder; empty keeps it
  }
  const value = parameter.default;
  const kind = inputKind(parameter);
  if (kind === 'checkbox') {
    return value === true;
  }
  if (value === null || value === undefined) {
    return parameter.nullable || parameter.type === 'any' ? 'None' : '';
  }
  if (kind === 'tristate') {
    return value ? 'true' : 'false';
  }
  if (kind === 'json') {
    return JSON.stringify(value);
  }
  if (typeof value === 'string') {
    // `any`: a string that reads as JSON (e.g. "123") is quoted to stay a string.
    return parameter.type === 'any' && looksLikeJson(value) ? JSON.stringify(value) : value;
  }
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

function typeName(value: unknown): string {
  if (value === null) {
    return 'null';
  }
  if (Array.isArray(value)) {
    return 'a list';
  }
  if (typeof value === 'object') {
    return 'a dict';
  }
  if (typeof value === 'number') {
    return Number.isInteger(value) ? 'an int' : 'a float';
  }
  return typeof value === 'boolean' ? 'a boolean' : 'a string';
}

/** Check a JSON value against a scalar type name; the message when it does not fit. */
function checkScalar(type: string, value: unknown): string | null {
  switch (type) {
    case 'int':
      return typeof value === 'number' && Number.isSafeInteger(value)
        ? null
        : `expected an int, got ${typeName(value)}`;
    case 'float':
      return typeof value === 'number' ? null : `expected a number, got ${typeName(value)}`;
    case 'str':
      return typeof value === 'string' ? null : `expected a string, got ${typeName(value)}`;
    case 'bool':
      return typeof value === 'boolean' ? null : `expected true or false, got ${typeName(value)}`;
    default:
      return null;
  }
}

function ok(value: unknown, useDefault = false): ParsedValue {
  return { ok: true, value, useDefault };
}

function fail(error: string): ParsedValue {
  return { ok: false, error };
}

/**
 * Parse what an input holds into the value sent to `POST /cd4ml-nb/jobs`.
 *
 * `useDefault` is true when the input is left empty for a default that is an
 * expression: the parameter is then not sent and the notebook keeps its own.
 */
export function parseValue(parameter: IParameter, raw: string | boolean): ParsedValue {
  const kind = inputKind(parameter);
  if (typeof raw === 'boolean') {
    return kind === 'checkbox' || kind === 'tristate'
      ? ok(raw)
      : fail('expected text, got a checkbox value');
  }
  const text = raw.trim();
  if (parameter.expression !== null && raw === '') {
    return ok(undefined, true);
  }
  if (parameter.nullable && NULL_WORDS.includes(text.toLowerCase())) {
    return ok(null);
  }
  if (parameter.nullable && text === '' && kind !== 'text') {
    return ok(null);
  }
  switch (kind) {
    case 'checkbox':
    case 'tristate': {
      const low = text.toLowerCase();
      if (['true', 'yes', 'on', '1'].includes(low)) {
        return ok(true);
      }
      if (['false', 'no', 'off', '0'].includes(low)) {
        return ok(false);
      }
      return fail('expected true or false');
    }
    case 'int': {
      if (text === '') {
        return fail('required: a whole number');
      }
      if (!INT_PATTERN.test(text)) {
        return fail(`expected a whole number, got "${text}"`);
      }
      const value = Number(text);
      return Number.isSafeInteger(value)
        ? ok(value)
        : fail('the number is too large for an exact int');
    }
    case 'float': {
      if (text === '') {
        return fail('required: a number');
      }
      if (!FLOAT_PATTERN.test(text)) {
        return fail(`expected a number, got "${text}"`);
      }
      const value = Number(text);
      return Number.isFinite(value) ? ok(value) : fail('the number is out of range');
    }
    case 'json': {
      if (text === '') {
        return fail(`required: ${parameter.type === 'dict' ? 'a JSON object' : 'a JSON list'}`);
      }
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch (error) {
        return fail(`not valid JSON: ${(error as Error).message}`);
      }
      if (parameter.type === 'dict') {
        return value !== null && typeof value === 'object' && !Array.isArray(value)
          ? ok(value)
          : fail(`expected a JSON object, got ${typeName(value)}`);
      }
      if (!Array.isArray(value)) {
        return fail(`expected a JSON list, got ${typeName(value)}`);
      }
      const inner = LIST_OF.exec(parameter.type)?.[1];
      if (inner) {
        for (let i = 0; i < value.length; i++) {
          const problem = checkScalar(inner, value[i]);
          if (problem) {
            return fail(`item ${i}: ${problem}`);
          }
        }
      }
      return ok(value);
    }
    default: {
      if (parameter.type === 'str') {
        return ok(raw);
      }
      // `any` (and types this frontend does not know): JSON, else the text itself.
      if (text === '') {
        return ok('');
      }
      try {
        return ok(JSON.parse(text));
      } catch {
        return ok(raw);
      }
    }
  }
}

/** Structural equality of JSON values. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) {
    return true;
  }
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') {
    return false;
  }
  if (Array.isArray(a) !== Array.isArray(b)) {
    return false;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, i) => jsonEqual(item, b[i]));
  }
  const left = a as Record<string, unknown>;
  const right = b as Record<string, unknown>;
  const keys = Object.keys(left);
  return (
    keys.length === Object.keys(right).length &&
    keys.every(key => Object.prototype.hasOwnProperty.call(right, key) && jsonEqual(left[key], right[key]))
  );
}

/** Whether a parsed value is the notebook's own default (then it need not be sent). */
export function isDefault(parameter: IParameter, parsed: ParsedValue): boolean {
  if (!parsed.ok) {
    return false;
  }
  if (parsed.useDefault) {
    return true;
  }
  if (parameter.expression !== null) {
    return false;
  }
  const fallback = parameter.default === undefined ? null : parameter.default;
  return jsonEqual(parsed.value, fallback);
}
