/**
 * The set-up the main-area views (Experiments dashboard, Branches, Pipelines) share: a command
 * and palette item that open one widget or bring it back, its restoration, and a poll that reads
 * its model again while it is visible.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { ITranslator, nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { IDisposable } from '@lumino/disposable';
import { IPoll, Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { experimentsIcon } from './icons';

/** What a view is made of each time it opens. */
export interface IMainAreaContent<T extends Widget> {
  content: T;
  /** Read when the view opens and again every `frequency` while it is visible; disposed with it. */
  model: { refresh(): Promise<void>; dispose(): void };
  frequency: Partial<IPoll.Frequency>;
  /** More set-up once the first read has started (a toolbar, settings to follow); disposed with the view. */
  started?: (widget: MainAreaWidget<T>, poll: Poll) => IDisposable | void;
}

export interface IMainAreaView<T extends Widget> {
  /**
   * `branches`: the widget's id and tracker namespace are `cd4ml-nb-branches`, its poll
   * `cd4ml-nb:branches`, and the restorer knows it as `branches`.
   */
  name: string;
  /** The command that opens the view; its label, caption and the tab's title (translated). */
  command: string;
  label: string;
  caption: string;
  title: string;
  create: () => IMainAreaContent<T> | Promise<IMainAreaContent<T>>;
  trans: TranslationBundle;
  palette: ICommandPalette | null;
  restorer: ILayoutRestorer | null;
}

/** Add the command that opens the view (one at a time) to the palette, and restore it with the layout. */
export function addMainAreaView<T extends Widget>(app: JupyterFrontEnd, view: IMainAreaView<T>): WidgetTracker<MainAreaWidget<T>> {
  const { commands, shell } = app;
  const tracker = new WidgetTracker<MainAreaWidget<T>>({ namespace: `cd4ml-nb-${view.name}` });

  const open = async (): Promise<MainAreaWidget<T>> => {
    const existing = tracker.currentWidget;
    if (existing && !existing.isDisposed) {
      shell.activateById(existing.id);
      return existing;
    }
    const { content, model, frequency, started } = await view.create();
    const widget = new MainAreaWidget({ content });
    widget.id = `cd4ml-nb-${view.name}`;
    widget.title.label = view.title;
    widget.title.icon = experimentsIcon;
    widget.title.closable = true;
    const poll = new Poll({
      factory: () => model.refresh(),
      frequency,
      name: `cd4ml-nb:${view.name}`,
      standby: () => widget.isHidden || document.hidden
    });
    void model.refresh();
    const extra = started?.(widget, poll);
    widget.disposed.connect(() => {
      extra?.dispose();
      poll.dispose();
      model.dispose();
    });
    shell.add(widget, 'main');
    await tracker.add(widget);
    shell.activateById(widget.id);
    return widget;
  };

  commands.addCommand(view.command, { label: view.label, caption: view.caption, icon: experimentsIcon, execute: open });
  view.palette?.addItem({ command: view.command, category: view.trans.__('CD4ML') });
  void view.restorer?.restore(tracker, { command: view.command, name: () => view.name });
  return tracker;
}

/** A plugin that only adds a main-area view (the palette, restorer and translator are optional). */
export function mainAreaPlugin<T extends Widget>(
  id: string,
  description: string,
  view: (app: JupyterFrontEnd, trans: TranslationBundle) => Omit<IMainAreaView<T>, 'trans' | 'palette' | 'restorer'>
): JupyterFrontEndPlugin<void> {
  return {
    id,
    description,
    autoStart: true,
    optional: [ICommandPalette, ILayoutRestorer, ITranslator],
    activate: (
      app: JupyterFrontEnd,
      palette: ICommandPalette | null,
      restorer: ILayoutRestorer | null,
      translator: ITranslator | null
    ) => {
      const trans = (translator ?? nullTranslator).load('cd4ml_nb');
      addMainAreaView(app, { ...view(app, trans), trans, palette, restorer });
    }
  };
}
