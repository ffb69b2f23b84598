/**
 * The active notebook's path and pairing state, with a *Pair with .py* button, and for a pair out
 * of sync its diff and a *Sync* action (*Keep .py* / *Keep .ipynb* when both sides changed).
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { describePairing } from '../models/pairing';
import { clickHandler } from './clicks';
import { IExperimentsModel, IPairing, PairSide } from '../tokens';

function pairingTitle(pairing: IPairing, trans: TranslationBundle): string {
  const lines = [
    trans.__('Notebook: %1', pairing.ipynb ?? trans.__('(missing)')),
    trans.__('Script: %1', pairing.text ?? trans.__('(missing)'))
  ];
  if (pairing.formats) {
    lines.push(trans.__('Formats: %1', pairing.formats));
  }
  if (pairing.newer) {
    lines.push(trans.__('Newer side: %1', sideName(pairing, pairing.newer)));
  }
  if (pairing.basis) {
    lines.push(trans.__('Compared against: %1', pairing.basis));
  }
  return lines.join('\n');
}

/** `.py`, `.md`, … for the text side; `.ipynb` for the notebook. */
function sideName(pairing: IPairing, side: PairSide): string {
  if (side === 'ipynb') {
    return '.ipynb';
  }
  const match = /\.[^./]+$/.exec(pairing.text ?? '');
  return match ? match[0] : '.py';
}

function pairingState(pairing: IPairing): string {
  if (!pairing.paired) {
    return 'unpaired';
  }
  if (pairing.conflict) {
    return 'conflict';
  }
  if (pairing.missing) {
    return 'missing';
  }
  return pairing.in_sync === false ? 'out-of-sync' : 'in-sync';
}

/** A text button of the panel. */
function PanelButton(props: {
  label: string;
  onClick: () => void;
  testid: string;
  title: string;
  disabled?: boolean;
}): JSX.Element {
  return (
    <Button
      type="button"
      className="cd4ml-nb-Button"
      data-testid={props.testid}
      title={props.title}
      disabled={props.disabled}
      onClick={clickHandler(props.onClick)}
    >
      {props.label}
    </Button>
  );
}

/** Props of {@link PairingView}. */
export interface IPairingViewProps {
  model: IExperimentsModel;
  trans: TranslationBundle;
  hidden?: boolean;
}

/** Shows the notebook followed by the panel and whether its `.py` pair is in sync. */
export function PairingView(props: IPairingViewProps): JSX.Element {
  const { model, trans } = props;
  const path = model.notebookPath;
  if (path === null) {
    return (
      <section className="cd4ml-nb-Section cd4ml-nb-Pairing" hidden={props.hidden}>
        <p className="cd4ml-nb-Empty" data-testid="cd4ml-no-notebook">
          {trans.__('Open a notebook to run it as an experiment.')}
        </p>
      </section>
    );
  }
  const pairing = model.pairing;
  let hint: string | null = null;
  const outOfSync = !!pairing?.paired && pairing.in_sync === false && pairing.missing === null;
  if (outOfSync && pairing?.conflict) {
    hint = trans.__(
      'Both sides changed since %1: keep one of them (the other is rewritten from it; the notebook keeps its outputs).',
      pairing.basis ?? trans.__('the last sync')
    );
  } else if (outOfSync && pairing) {
    hint = trans.__(
      'The %1 changed: sync writes the %2 from it.',
      sideName(pairing, pairing.newer ?? 'ipynb'),
      sideName(pairing, pairing.newer === 'text' ? 'ipynb' : 'text')
    );
  }
  const canPair = pairing !== null && (!pairing.paired || pairing.missing !== null);

  let syncActions: JSX.Element | null = null;
  if (outOfSync && pairing) {
    const blocked = model.notebookDirty
      ? trans.__('Save the notebook first: a sync reads and writes the files on disk.')
      : null;
    const disabled = model.pairingBusy || blocked !== null;
    syncActions = (
      <div className="cd4ml-nb-Row cd4ml-nb-SyncActions" data-testid="cd4ml-sync-actions">
        {pairing.conflict ? (
          (['text', 'ipynb'] as PairSide[]).map(side => (
            <PanelButton
              key={side}
              label={trans.__('Keep %1', sideName(pairing, side))}
              onClick={() => void model.sync(side)}
              testid={`cd4ml-sync-keep-${side}`}
              title={trans.__('Rewrite %1 from %2', pairing[side === 'text' ? 'ipynb' : 'text'] ?? '', pairing[side] ?? '')}
              disabled={disabled}
            />
          ))
        ) : (
          <PanelButton
            label={model.pairingBusy ? trans.__('Syncing…') : trans.__('Sync')}
            onClick={() => void model.sync()}
            testid="cd4ml-sync-button"
            title={trans.__(
              'Rewrite the %1 from the %2',
              sideName(pairing, pairing.newer === 'text' ? 'ipynb' : 'text'),
              sideName(pairing, pairing.newer ?? 'ipynb')
            )}
            disabled={disabled}
          />
        )}
        {blocked ? (
          <span className="cd4ml-nb-Hint" data-testid="cd4ml-sync-blocked">
            {blocked}
          </span>
        ) : null}
      </div>
    );
  }
  const diff = model.pairingDiff ?? (outOfSync ? pairing?.diff ?? null : null);
  return (
    <section className="cd4ml-nb-Section cd4ml-nb-Pairing" hidden={props.hidden}>
      <div className="cd4ml-nb-Row">
        <span className="cd4ml-nb-Label">{trans.__('Notebook')}</span>
        <span className="cd4ml-nb-Path" data-testid="cd4ml-notebook-path" title={path}>
          {path}
        </span>
      </div>
      <div className="cd4ml-nb-Row">
        <span className="cd4ml-nb-Label">{trans.__('Pairing')}</span>
        <span
          className="cd4ml-nb-PairingState"
          data-testid="cd4ml-pairing"
          title={pairing ? pairingTitle(pairing, trans) : ''}
          data-state={pairing ? pairingState(pairing) : 'unknown'}
        >
          {pairing ? describePairing(pairing, trans) : model.pairingError ? trans.__('unknown') : '…'}
        </span>
        {canPair ? (
          <PanelButton
            label={model.pairingBusy ? trans.__('Pairing…') : trans.__('Pair with .py')}
            onClick={() => void model.pair()}
            testid="cd4ml-pair-button"
            title={trans.__('Pair this notebook with a percent-format .py script (Jupytext)')}
            disabled={model.pairingBusy}
          />
        ) : null}
      </div>
      {hint ? (
        <p className="cd4ml-nb-Hint" data-testid="cd4ml-pairing-hint">
          {hint}
        </p>
      ) : null}
      {syncActions}
      {model.pairingError ? (
        <p className="cd4ml-nb-Error" data-testid="cd4ml-pairing-error">
          {model.pairingError}
        </p>
      ) : null}
      {diff ? (
        // Keyed by its text and the conflict, so a new diff opens (or closes) as it should.
        <details
          key={`${!!pairing?.conflict}:${diff}`}
          className="cd4ml-nb-Diff"
          data-testid="cd4ml-pairing-diff"
          open={!!pairing?.conflict}
        >
          <summary>{trans.__('Differences')}</summary>
          <pre>{diff}</pre>
        </details>
      ) : null}
      {model.syncDone && !outOfSync ? (
        <p className="cd4ml-nb-Hint" data-testid="cd4ml-sync-done">
          {model.syncDone}
        </p>
      ) : null}
    </section>
  );
}
