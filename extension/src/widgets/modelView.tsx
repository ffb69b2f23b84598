/**
 * What the React views (the Experiments dashboard and panel, the Pipelines view) share: a widget
 * drawn again whenever its model changes, and the main-area views' header with the view's title
 * and a refresh button.
 */
import { ReactWidget } from '@jupyterlab/apputils';
import { nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { refreshIcon } from '@jupyterlab/ui-components';
import { ISignal } from '@lumino/signaling';
import * as React from 'react';

/** A React widget that renders its model again on every change of it. */
export abstract class ModelView<M extends { readonly changed: ISignal<unknown, unknown> }> extends ReactWidget {
  constructor(
    readonly model: M,
    protected readonly trans: TranslationBundle = nullTranslator.load('cd4ml_nb'),
    className = 'cd4ml-nb-DashboardView'
  ) {
    super();
    this.addClass(className);
    model.changed.connect(this.update, this);
  }

  dispose(): void {
    this.model.changed.disconnect(this.update, this);
    super.dispose();
  }
}

/** A view's header: its title, what `children` adds, a refresh button and, while the model reads, `reading`. */
export function ViewHeader(props: {
  model: { readonly loading: boolean; refresh(): Promise<void> };
  trans: TranslationBundle;
  title: string;
  reading: string;
  children?: React.ReactNode;
}): JSX.Element {
  const { model, trans } = props;
  return (
    <header className="cd4ml-nb-DashboardHeader">
      <h2>{props.title}</h2>
      {props.children}
      <button className="jp-Button jp-mod-styled cd4ml-nb-IconButton" title={trans.__('Refresh')} onClick={() => void model.refresh()}>
        <refreshIcon.react tag="span" />
      </button>
      {model.loading ? <span className="cd4ml-nb-Hint">{props.reading}</span> : null}
    </header>
  );
}
