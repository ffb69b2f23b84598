/**
 * The parameter form as the server describes it: one field per property of the contract's JSON
 * Schema (`GET /cd4ml-nb/params` → `schema`), in the notebook's order.
 *
 * Nothing here parses a value: what the user types is checked by the server with the runner's
 * own parser (`POST /cd4ml-nb/params/check`), which answers typed values and a reason per misfit.
 */
import { IContractSchema, IFormField, IParameterSchema, InputKind } from './tokens';

/** The schema of a nullable parameter's own type (`anyOf: [T, null]` → `T`). */
function ownType(schema: IParameterSchema): IParameterSchema {
  return schema.anyOf ? schema.anyOf.find(s => s.type !== 'null') ?? {} : schema;
}

/** The input a parameter's schema is edited with. */
export function inputKind(schema: IParameterSchema): InputKind {
  const nullable = schema['x-cd4ml-nullable'] === true;
  switch (ownType(schema).type) {
    case 'boolean':
      return nullable ? 'tristate' : 'checkbox';
    case 'integer':
      return 'int';
    case 'number':
      return 'float';
    case 'array':
    case 'object':
      return 'json';
    default:
      return 'text';
  }
}

/** What the input shows for the notebook's default. */
function defaultRaw(kind: InputKind, type: string, schema: IParameterSchema): string | boolean {
  if (schema['x-cd4ml-expression'] !== undefined) {
    return ''; // shown as a placeholder; left empty, the notebook keeps its own
  }
  const value = schema.default;
  if (kind === 'checkbox') {
    return value === true;
  }
  if (value === null || value === undefined) {
    return schema['x-cd4ml-nullable'] || type === 'any' ? 'None' : '';
  }
  if (kind === 'tristate') {
    return value ? 'true' : 'false';
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** One form field per parameter, in the notebook's order. */
export function formFields(schema: IContractSchema): IFormField[] {
  const names = schema['x-cd4ml-order'] ?? Object.keys(schema.properties);
  return names
    .filter(name => Object.prototype.hasOwnProperty.call(schema.properties, name))
    .map(name => {
      const property = schema.properties[name];
      const kind = inputKind(property);
      const type = property['x-cd4ml-type'] ?? 'any';
      const nullable = property['x-cd4ml-nullable'] === true;
      const expression = property['x-cd4ml-expression'] ?? null;
      return {
        name,
        kind,
        type,
        typeLabel: nullable && type !== 'any' ? `${type} or None` : type,
        nullable,
        help: property.description ?? '',
        expression,
        default: expression === null ? property.default ?? null : undefined,
        defaultRaw: defaultRaw(kind, type, property)
      };
    });
}

/** The text the server checks for what an input holds (a checkbox is `true` or `false`). */
export function fieldText(raw: string | boolean): string {
  return typeof raw === 'boolean' ? String(raw) : raw;
}

/** Structural equality of JSON values (a checked value equal to the default is not sent). */
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
