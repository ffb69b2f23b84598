/**
 * The active notebook's path and pairing state, with a *Pair with .py* button.
 */
import { describePairing } from '../model';
import { IExperimentsModel, IPairing } from '../tokens';
import { button, h, replaceChildren } from './dom';

function pairingTitle(pairing: IPairing): string {
  const lines = [
    `Notebook: ${pairing.ipynb ?? '(missing)'}`,
    `Script: ${pairing.text ?? '(missing)'}`
  ];
  if (pairing.formats) {
    lines.push(`Formats: ${pairing.formats}`);
  }
  if (pairing.newer) {
    lines.push(`Newer side: ${pairing.newer === 'text' ? '.py' : '.ipynb'}`);
  }
  if (pairing.basis) {
    lines.push(`Compared against: ${pairing.basis}`);
  }
  return lines.join('\n');
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
  constructor(model: IExperimentsModel) {
    this._model = model;
    this.node = h('section', { className: 'cd4ml-nb-Section cd4ml-nb-Pairing' });
  }

  readonly node: HTMLElement;

  update(): void {
    const model = this._model;
    const path = model.notebookPath;
    if (path === null) {
      replaceChildren(this.node, [
        h('p', {
          className: 'cd4ml-nb-Empty',
          testid: 'cd4ml-no-notebook',
          text: 'Open a notebook to run it as an experiment.'
        })
      ]);
      return;
    }
    const pairing = model.pairing;
    const state = h('span', {
      className: 'cd4ml-nb-PairingState',
      testid: 'cd4ml-pairing',
      text: pairing ? describePairing(pairing) : model.pairingError ? 'unknown' : '…',
      title: pairing ? pairingTitle(pairing) : '',
      attrs: { 'data-state': pairing ? pairingState(pairing) : 'unknown' }
    });
    let hint: string | null = null;
    if (pairing?.paired && pairing.conflict) {
      hint = 'Both sides changed since the last sync: merge them by hand, then run `cd4ml-nb sync`.';
    } else if (pairing?.paired && pairing.in_sync === false) {
      hint = `The ${pairing.newer === 'text' ? '.py' : '.ipynb'} looks newer: reopen or run \`cd4ml-nb sync\`.`;
    }
    const canPair = pairing !== null && (!pairing.paired || pairing.missing !== null);
    const pairButton = canPair
      ? button(model.pairingBusy ? 'Pairing…' : 'Pair with .py', () => void model.pair(), {
          testid: 'cd4ml-pair-button',
          title: 'Pair this notebook with a percent-format .py script (Jupytext)'
        })
      : null;
    if (pairButton) {
      pairButton.disabled = model.pairingBusy;
    }
    const errorNodes: HTMLElement[] = [];
    if (model.pairingError) {
      errorNodes.push(
        h('p', { className: 'cd4ml-nb-Error', testid: 'cd4ml-pairing-error', text: model.pairingError })
      );
    }
    if (model.pairingDiff) {
      errorNodes.push(
        h('details', { className: 'cd4ml-nb-Diff' }, [
          h('summary', { text: 'Differences' }),
          h('pre', { text: model.pairingDiff })
        ])
      );
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
      hint ? h('p', { className: 'cd4ml-nb-Hint', text: hint }) : null,
      ...errorNodes
    ]);
  }

  private _model: IExperimentsModel;
}
