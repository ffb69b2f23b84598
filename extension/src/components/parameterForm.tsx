/**
 * The parameter form rendered from the contract's JSON Schema: one input per parameter, by type,
 * with the defaults filled in and, under a value the server's parser refuses, its reason.
 *
 * Inputs are uncontrolled: the model holds what was typed, and a value the model changes
 * (reset, contract read again) is written to an input only while it does not have the focus,
 * so typing is never interrupted by a render.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { IExperimentsModel, IFieldState } from '../tokens';

/** One ref type for whichever input a field renders (checkbox, select, textarea, text). */
type InputRef = React.RefObject<HTMLInputElement & HTMLTextAreaElement & HTMLSelectElement>;

/** Put the model's value into an input unless the user is typing in it. */
function useModelValue(raw: string | boolean): InputRef {
  const ref: InputRef = React.useRef(null);
  React.useEffect(() => {
    const input: HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement | null = ref.current;
    if (!input || document.activeElement === input) {
      return;
    }
    if (input instanceof HTMLInputElement && input.type === 'checkbox') {
      input.checked = raw === true;
    } else if (input.value !== String(raw)) {
      input.value = String(raw);
    }
  }, [raw]);
  return ref;
}

interface IFieldProps {
  model: IExperimentsModel;
  field: IFieldState;
  id: string;
  trans: TranslationBundle;
}

/** The input of one parameter, by kind. */
function FieldInput(props: IFieldProps): JSX.Element {
  const { model, field, id, trans } = props;
  const parameter = field.parameter;
  const name = parameter.name;
  const kind = parameter.kind;
  const ref = useModelValue(field.raw);
  const common = {
    id,
    name,
    ref,
    'data-testid': `cd4ml-param-${name}`,
    'data-type': parameter.type,
    'aria-describedby': `${id}-error`,
    'aria-invalid': field.error !== null ? ('true' as const) : ('false' as const)
  };
  const placeholder = parameter.expression !== null ? trans.__('default: %1', parameter.expression) : undefined;
  if (kind === 'checkbox') {
    return (
      <input
        {...common}
        type="checkbox"
        className="cd4ml-nb-Checkbox"
        defaultChecked={field.raw === true}
        placeholder={placeholder}
        onChange={event => model.setValue(name, event.currentTarget.checked)}
      />
    );
  }
  if (kind === 'tristate') {
    return (
      <select
        {...common}
        className="jp-mod-styled cd4ml-nb-Input"
        defaultValue={String(field.raw)}
        onChange={event => model.setValue(name, event.currentTarget.value)}
      >
        <option value="true">true</option>
        <option value="false">false</option>
        <option value="None">None</option>
      </select>
    );
  }
  if (kind === 'json') {
    return (
      <textarea
        {...common}
        className="jp-mod-styled cd4ml-nb-Input cd4ml-nb-Json"
        rows={2}
        spellCheck={false}
        defaultValue={String(field.raw)}
        placeholder={placeholder}
        onChange={event => model.setValue(name, event.currentTarget.value)}
      />
    );
  }
  return (
    <input
      {...common}
      type="text"
      className="jp-mod-styled cd4ml-nb-Input"
      spellCheck={false}
      autoComplete="off"
      inputMode={kind === 'int' ? 'numeric' : kind === 'float' ? 'decimal' : undefined}
      defaultValue={String(field.raw)}
      placeholder={placeholder}
      onChange={event => model.setValue(name, event.currentTarget.value)}
    />
  );
}

/** One parameter: name, type, input, help and the reason a value is refused. */
function FieldRow(props: IFieldProps): JSX.Element {
  const { field, id } = props;
  const parameter = field.parameter;
  const name = parameter.name;
  const input = <FieldInput {...props} />;
  const label = (
    <label className="cd4ml-nb-ParamName" htmlFor={id}>
      {name}
    </label>
  );
  const type = <span className="cd4ml-nb-ParamType">{parameter.typeLabel}</span>;
  const classes = ['cd4ml-nb-Param'];
  if (field.error !== null) {
    classes.push('cd4ml-nb-mod-invalid');
  }
  if (field.changed) {
    classes.push('cd4ml-nb-mod-changed');
  }
  return (
    <div className={classes.join(' ')} data-testid={`cd4ml-param-row-${name}`}>
      {parameter.kind === 'checkbox' ? (
        <div className="cd4ml-nb-ParamHead">
          {input}
          {label}
          {type}
        </div>
      ) : (
        <>
          <div className="cd4ml-nb-ParamHead">
            {label}
            {type}
          </div>
          {input}
        </>
      )}
      {parameter.help ? <div className="cd4ml-nb-ParamHelp">{parameter.help}</div> : null}
      <div className="cd4ml-nb-FieldError" data-testid={`cd4ml-param-error-${name}`} id={`${id}-error`} role="alert">
        {field.error ?? ''}
      </div>
    </div>
  );
}

let nextFormId = 0;

/** Props of {@link ParameterForm}. */
export interface IParameterFormProps {
  model: IExperimentsModel;
  /** Called when Enter is pressed in a one-line input. */
  onSubmit: () => void;
  trans: TranslationBundle;
  hidden?: boolean;
}

/** The form of the active notebook's parameters. */
export function ParameterForm(props: IParameterFormProps): JSX.Element {
  const { model, trans } = props;
  const [formId] = React.useState(() => nextFormId++);
  let content: React.ReactNode = null;
  if (model.notebookPath !== null) {
    const heading = <h3 className="cd4ml-nb-Heading">{trans.__('Parameters')}</h3>;
    if (model.contractError) {
      content = (
        <>
          {heading}
          <p className="cd4ml-nb-Error" data-testid="cd4ml-params-error">
            {model.contractError}
          </p>
        </>
      );
    } else if (model.contract === null) {
      content = (
        <>
          {heading}
          <p className="cd4ml-nb-Hint">{trans.__('Reading parameters…')}</p>
        </>
      );
    } else if (model.fields.length === 0) {
      content = (
        <>
          {heading}
          <p className="cd4ml-nb-Hint" data-testid="cd4ml-no-params">
            {trans.__('No cell is tagged "parameters": the notebook runs with its own values.')}
          </p>
        </>
      );
    } else {
      content = (
        <>
          {heading}
          {model.fields.map(field => (
            <FieldRow
              key={`${model.notebookPath}\u0000${field.parameter.name}`}
              model={model}
              field={field}
              id={`cd4ml-nb-param-${formId}-${field.parameter.name}`}
              trans={trans}
            />
          ))}
          {/* A hidden submit button makes Enter in a text input submit the form. */}
          <button type="submit" hidden tabIndex={-1} />
        </>
      );
    }
  }
  return (
    <form
      className="cd4ml-nb-Section cd4ml-nb-ParamForm"
      data-testid="cd4ml-params"
      noValidate
      hidden={props.hidden}
      onSubmit={event => {
        event.preventDefault();
        props.onSubmit();
      }}
    >
      {content}
    </form>
  );
}
