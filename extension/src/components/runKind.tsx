/**
 * What a listed run was and why it did not finish, shared by the panel's latest runs and the
 * dashboard's table: a kind label (a trial names its sweep) and, for a FAILED or KILLED run,
 * its reason, failed cell and message. Every string from the server is rendered as text.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { shortRunId } from '../dashboard/charts';
import { failureOf, IRunFailure, kindOf } from '../runs';
import { IRun } from '../tokens';

// The label's look is inline: JupyterLab's own colour variables, so it follows the theme.
const BADGE_STYLE: React.CSSProperties = {
  display: 'inline-block',
  padding: '0 4px',
  border: 'var(--jp-border-width) solid var(--jp-border-color1)',
  borderRadius: 'var(--jp-border-radius)',
  color: 'var(--jp-ui-font-color1)',
  fontSize: 'var(--jp-ui-font-size0)',
  lineHeight: '1.5',
  whiteSpace: 'nowrap'
};

const FAILURE_STYLE: React.CSSProperties = { margin: '2px 0 0', maxWidth: '40em', whiteSpace: 'normal' };

/** The tooltip of a kind label: a trial names its sweep, any other child its parent run. */
export function kindTitle(run: IRun, trans: TranslationBundle): string {
  const kind = kindOf(run);
  const parent = run.parent_run_id;
  if (parent) {
    return kind === 'trial'
      ? trans.__('Trial of sweep %1', shortRunId(parent))
      : trans.__('%1 of run %2', kind, shortRunId(parent));
  }
  return trans.__('Kind of run: %1', kind);
}

/** A run's kind as a small label. */
export function KindBadge(props: { run: IRun; trans: TranslationBundle }): JSX.Element {
  const { run, trans } = props;
  const kind = kindOf(run);
  return (
    <span
      className={`cd4ml-nb-Kind cd4ml-nb-mod-${kind.replace(/[^\w-]/g, '_')}`}
      data-testid={`cd4ml-kind-${run.run_id}`}
      data-kind={kind}
      data-parent={run.parent_run_id ?? undefined}
      title={kindTitle(run, trans)}
      style={BADGE_STYLE}
    >
      {kind}
    </span>
  );
}

/** `cell-exception at cell 3: ValueError: bad` — reason, failed cell and message, as text. */
export function failureText(failure: IRunFailure, trans: TranslationBundle): string {
  const head = [
    failure.reason ?? '',
    failure.cell !== null ? trans.__('at cell %1', failure.cell) : ''
  ]
    .filter(Boolean)
    .join(' ');
  return head && failure.message ? `${head}: ${failure.message}` : head || failure.message || '';
}

/** Why a FAILED or KILLED run did not finish; nothing for other runs. */
export function RunFailure(props: { run: IRun; trans: TranslationBundle }): JSX.Element | null {
  const { run, trans } = props;
  const failure = failureOf(run);
  if (failure === null) {
    return null;
  }
  const text = failureText(failure, trans);
  return (
    <div
      className="cd4ml-nb-Error cd4ml-nb-Failure"
      data-testid={`cd4ml-failure-${run.run_id}`}
      data-reason={failure.reason ?? undefined}
      data-failed-cell={failure.cell ?? undefined}
      title={text}
      style={FAILURE_STYLE}
    >
      {text}
    </div>
  );
}
