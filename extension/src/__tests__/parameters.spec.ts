import { defaultRaw, describeType, inputKind, isDefault, jsonEqual, parseValue } from '../parameters';
import { IParameter } from '../tokens';

function param(type: string, overrides: Partial<IParameter> = {}): IParameter {
  return { name: 'p', type, default: null, help: '', nullable: false, expression: null, ...overrides };
}

function value(p: IParameter, raw: string | boolean): unknown {
  const parsed = parseValue(p, raw);
  if (!parsed.ok) {
    throw new Error(parsed.error);
  }
  return parsed.value;
}

function error(p: IParameter, raw: string | boolean): string {
  const parsed = parseValue(p, raw);
  if (parsed.ok) {
    throw new Error(`accepted ${JSON.stringify(parsed.value)}`);
  }
  return parsed.error;
}

describe('inputKind', () => {
  it('gives each type its input', () => {
    expect(inputKind(param('bool'))).toBe('checkbox');
    expect(inputKind(param('bool', { nullable: true }))).toBe('tristate');
    expect(inputKind(param('int'))).toBe('int');
    expect(inputKind(param('float'))).toBe('float');
    expect(inputKind(param('str'))).toBe('text');
    expect(inputKind(param('list'))).toBe('json');
    expect(inputKind(param('dict'))).toBe('json');
    expect(inputKind(param('list[str]'))).toBe('json');
    expect(inputKind(param('any'))).toBe('text');
    expect(describeType(param('int', { nullable: true }))).toBe('int or None');
  });
});

describe('defaultRaw', () => {
  it('shows each default in its input', () => {
    expect(defaultRaw(param('int', { default: 8 }))).toBe('8');
    expect(defaultRaw(param('float', { default: 0.25 }))).toBe('0.25');
    expect(defaultRaw(param('str', { default: 'decision_tree' }))).toBe('decision_tree');
    expect(defaultRaw(param('bool', { default: true }))).toBe(true);
    expect(defaultRaw(param('bool', { default: false, nullable: true }))).toBe('false');
    expect(defaultRaw(param('list[int]', { default: [1, 2] }))).toBe('[1,2]');
    expect(defaultRaw(param('dict', { default: { a: 1 } }))).toBe('{"a":1}');
    expect(defaultRaw(param('int', { default: null, nullable: true }))).toBe('None');
    expect(defaultRaw(param('any', { default: null, nullable: true }))).toBe('None');
    expect(defaultRaw(param('any', { default: 'abc' }))).toBe('abc');
    expect(defaultRaw(param('any', { default: '123' }))).toBe('"123"');
  });

  it('leaves an expression default empty (the placeholder shows it)', () => {
    const p = param('any', { default: 'np.arange(3)', expression: 'np.arange(3)' });
    expect(defaultRaw(p)).toBe('');
    const parsed = parseValue(p, '');
    expect(parsed).toEqual({ ok: true, value: undefined, useDefault: true });
    expect(isDefault(p, parsed)).toBe(true);
    expect(isDefault(p, parseValue(p, '[0, 1, 2]'))).toBe(false);
  });
});

describe('parseValue', () => {
  it('int: whole numbers only', () => {
    const p = param('int', { default: 8 });
    expect(value(p, '3')).toBe(3);
    expect(value(p, ' -12 ')).toBe(-12);
    expect(error(p, '3.5')).toMatch(/whole number/);
    expect(error(p, 'abc')).toMatch(/whole number/);
    expect(error(p, '')).toMatch(/required/);
    expect(error(p, '99999999999999999999')).toMatch(/too large/);
    expect(error(p, 'None')).toMatch(/whole number/);
  });

  it('float: any number', () => {
    const p = param('float', { default: 0.5 });
    expect(value(p, '0.25')).toBe(0.25);
    expect(value(p, '1e-3')).toBe(0.001);
    expect(value(p, '2')).toBe(2);
    expect(value(p, '.5')).toBe(0.5);
    expect(error(p, '1,5')).toMatch(/a number/);
    expect(error(p, 'nan')).toMatch(/a number/);
  });

  it('str: the text as typed', () => {
    const p = param('str', { default: 'x' });
    expect(value(p, ' 007 ')).toBe(' 007 ');
    expect(value(p, '')).toBe('');
    expect(value(p, 'None')).toBe('None');
  });

  it('bool: the checkbox, or true/false text', () => {
    const p = param('bool', { default: false });
    expect(value(p, true)).toBe(true);
    expect(value(p, 'yes')).toBe(true);
    expect(value(p, 'off')).toBe(false);
    expect(error(p, 'maybe')).toMatch(/true or false/);
  });

  it('nullable: None, null, ~ or empty is null', () => {
    const p = param('int', { nullable: true });
    expect(value(p, 'None')).toBeNull();
    expect(value(p, 'null')).toBeNull();
    expect(value(p, '~')).toBeNull();
    expect(value(p, '')).toBeNull();
    expect(value(p, '5')).toBe(5);
    const s = param('str', { nullable: true });
    expect(value(s, 'None')).toBeNull();
    expect(value(s, '')).toBe('');
    const b = param('bool', { nullable: true });
    expect(value(b, 'None')).toBeNull();
    expect(value(b, 'true')).toBe(true);
  });

  it('list and dict: JSON of the right shape', () => {
    expect(value(param('list'), '[1, "a", null]')).toEqual([1, 'a', null]);
    expect(error(param('list'), '{"a": 1}')).toMatch(/JSON list, got a dict/);
    expect(error(param('list'), '[1, 2')).toMatch(/not valid JSON/);
    expect(value(param('dict'), '{"a": [1]}')).toEqual({ a: [1] });
    expect(error(param('dict'), '[1]')).toMatch(/JSON object, got a list/);
    expect(error(param('dict'), 'null')).toMatch(/JSON object, got null/);
  });

  it('list[T]: every item is checked', () => {
    expect(value(param('list[int]'), '[1, 2]')).toEqual([1, 2]);
    expect(error(param('list[int]'), '[1, 2.5]')).toBe('item 1: expected an int, got a float');
    expect(value(param('list[float]'), '[1, 2.5]')).toEqual([1, 2.5]);
    expect(error(param('list[str]'), '["a", 1]')).toBe('item 1: expected a string, got an int');
    expect(error(param('list[bool]'), '[true, 0]')).toBe('item 1: expected true or false, got an int');
    expect(error(param('list[int]'), '[true]')).toBe('item 0: expected an int, got a boolean');
  });

  it('any: JSON, else the text', () => {
    const p = param('any', { default: null, nullable: true });
    expect(value(p, '{"a": 1}')).toEqual({ a: 1 });
    expect(value(p, '3')).toBe(3);
    expect(value(p, 'hello world')).toBe('hello world');
    expect(value(p, '"123"')).toBe('123');
    expect(value(p, 'None')).toBeNull();
  });
});

describe('isDefault', () => {
  it('compares typed values', () => {
    expect(isDefault(param('int', { default: 8 }), parseValue(param('int'), '08'))).toBe(true);
    expect(isDefault(param('float', { default: 1 }), parseValue(param('float'), '1.0'))).toBe(true);
    expect(isDefault(param('list', { default: [1, 2] }), parseValue(param('list'), '[1,2]'))).toBe(true);
    expect(isDefault(param('list', { default: [1, 2] }), parseValue(param('list'), '[2,1]'))).toBe(false);
    expect(isDefault(param('int', { default: 8 }), parseValue(param('int'), 'x'))).toBe(false);
  });

  it('jsonEqual', () => {
    expect(jsonEqual({ a: [1, { b: null }] }, { a: [1, { b: null }] })).toBe(true);
    expect(jsonEqual({ a: 1 }, { a: 1, b: 2 })).toBe(false);
    expect(jsonEqual([1], { 0: 1 })).toBe(false);
    expect(jsonEqual(null, {})).toBe(false);
  });
});
