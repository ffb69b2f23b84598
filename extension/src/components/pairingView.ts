/**
 * The active notebook's path and pairing state, with a *Pair with .py* button, and for a pair out
 * of sync its diff and a *Sync* action (*Keep .py* / *Keep .ipynb* when both sides changed).
 */
import { TranslationBundle, nullTranslator } from '@jupyterlab/translation';

import { describePairing } from '../model';
import { IExperimentsModel, IPairing, PairSide } from '../tokens';
import { button, h, replaceChildren } from './dom';

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

/** Shows the notebook followed by the panel and whether its `.py` pair is in sync. */
export class PairingView {
  constructor(model: IExperimentsModel, trans: TranslationBundle = nullTranslator.load('cd4ml_nb')) {
    this._model = model;
    this._trans = trans;
    this.node = h('section', { className: 'cd4ml-nb-Section cd4ml-nb-Pairing' });
  }

  readonly node: HTMLElement;

  update(): void {
    const trans = this._trans;
    const model = this._model;
    const path = model.notebookPath;
    if (path === null) {
      replaceChildren(this.node, [
        h('p', {
          className: 'cd4ml-nb-Empty',
          testid: 'cd4ml-no-notebook',
          text: trans.__('Open a notebook to run it as an experiment.')
        })
      ]);
      return;
    }
    const pairing = model.pairing;
    const state = h('span', {
      className: 'cd4ml-nb-PairingState',
      testid: 'cd4ml-pairing',
      text: pairing ? describePairing(pairing) : model.pairingError ? trans.__('unknown') : '…',
      title: pairing ? pairingTitle(pairing, trans) : '',
      attrs: { 'data-state': pairing ? pairingState(pairing) : 'unknown' }
    });
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
    const pairButton = canPair
      ? button(model.pairingBusy ? trans.__('Pairing…') : trans.__('Pair with .py'), () => void model.pair(), {
          testid: 'cd4ml-pair-button',
          title: trans.__('Pair this notebook with a percent-format .py script (Jupytext)')
        })
      : null;
    if (pairButton) {
      pairButton.disabled = model.pairingBusy;
    }
    const syncNodes: HTMLElement[] = [];
    if (outOfSync && pairing) {
      const blocked = model.notebookDirty
        ? trans.__('Save the notebook first: a sync reads and writes the files on disk.')
        : null;
      const actions = pairing.conflict
        ? (['text', 'ipynb'] as PairSide[]).map(side =>
            button(trans.__('Keep %1', sideName(pairing, side)), () => void model.sync(side), {
              testid: `cd4ml-sync-keep-${side}`,
              title: trans.__('Rewrite %1 from %2', pairing[side === 'text' ? 'ipynb' : 'text'] ?? '', pairing[side] ?? '')
            })
          )
        : [
            button(model.pairingBusy ? trans.__('Syncing…') : trans.__('Sync'), () => void model.sync(), {
              testid: 'cd4ml-sync-button',
              title: trans.__(
                'Rewrite the %1 from the %2',
                sideName(pairing, pairing.newer === 'text' ? 'ipynb' : 'text'),
                sideName(pairing, pairing.newer ?? 'ipynb')
              )
            })
          ];
      for (const action of actions) {
        action.disabled = model.pairingBusy || blocked !== null;
      }
      syncNodes.push(
        h('div', { className: 'cd4ml-nb-Row cd4ml-nb-SyncActions', testid: 'cd4ml-sync-actions' }, [
          ...actions,
          blocked ? h('span', { className: 'cd4ml-nb-Hint', testid: 'cd4ml-sync-blocked', text: blocked }) : null
        ])
      );
    }
    const errorNodes: HTMLElement[] = [];
    if (model.pairingError) {
      errorNodes.push(
        h('p', { className: 'cd4ml-nb-Error', testid: 'cd4ml-pairing-error', text: model.pairingError })
      );
    }
    const diff = model.pairingDiff ?? (outOfSync ? pairing?.diff ?? null : null);
    if (diff) {
      const details = h('details', { className: 'cd4ml-nb-Diff', testid: 'cd4ml-pairing-diff' }, [
        h('summary', { text: trans.__('Differences') }),
        h('pre', { text: diff })
      ]);
      (details as HTMLDetailsElement).open = !!pairing?.conflict;
      errorNodes.push(details);
    }
    if (model.syncDone && !outOfSync) {
      errorNodes.push(h('p', { className: 'cd4ml-nb-Hint', testid: 'cd4ml-sync-done', text: model.syncDone }));
    }
    replaceChildren(this.node, [
      h('div', { className: 'cd4ml-nb-Row' }, [
        h('span', { className: 'cd4ml-nb-Label', text: 'Notebook' }),
        h('span', {
          className: 'cd4ml-nb-Path',
          testid: 'cd4ml-notebook-path',
          text: path,
          title: path
        })
      ]),
      h('div', { className: 'cd4ml-nb-Row' }, [
        h('span', { className: 'cd4ml-nb-Label', text: 'Pairing' }),
        state,
        pairButton
      ]),
      hint ? h('p', { className: 'cd4ml-nb-Hint', testid: 'cd4ml-pairing-hint', text: hint }) : null,
      ...syncNodes,
      ...errorNodes
    ]);
  }

  private _model: IExperimentsModel;
  private _trans: TranslationBundle;
}
