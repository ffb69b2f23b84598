/**
 * Pipelines plugin: the Pipelines view in the main area (palette, and the Experiments
 * dashboard's toolbar), read again every few seconds while visible.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { Poll } from '@lumino/polling';

import { experimentsIcon } from '../icons';
import { PipelinesModel } from './pipelines';
import { PipelinesView } from './pipelinesView';

/** The command that opens the Pipelines view. */
export const OPEN_PIPELINES = 'cd4ml-nb:open-pipelines';
const REFRESH_MS = 10_000;

export const pipelinesPlugin: JupyterFrontEndPlugin<void> = {
  id: 'cd4ml-nb:pipelines',
  description: 'Pipelines: pipeline runs with their steps, and `pipeline run` started from the Lab.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    translator: ITranslator | null
  ) => {
    const { commands, shell } = app;
    const trans = (translator ?? nullTranslator).load('cd4ml_nb');
    const tracker = new WidgetTracker<MainAreaWidget<PipelinesView>>({ namespace: 'cd4ml-nb-pipelines' });

    const open = async (): Promise<MainAreaWidget<PipelinesView>> => {
      const existing = tracker.currentWidget;
      if (existing && !existing.isDisposed) {
        shell.activateById(existing.id);
        return existing;
      }
      const model = new PipelinesModel(app.serviceManager.serverSettings);
      const widget = new MainAreaWidget({ content: new PipelinesView(model, trans) });
      widget.id = 'cd4ml-nb-pipelines';
      widget.title.label = trans.__('Pipelines');
      widget.title.icon = experimentsIcon;
      widget.title.closable = true;
      const poll = new Poll({
        factory: () => model.refresh(),
        frequency: { interval: REFRESH_MS, backoff: false },
        name: 'cd4ml-nb:pipelines',
        standby: () => widget.isHidden || document.hidden
      });
      widget.disposed.connect(() => {
        poll.dispose();
        model.dispose();
      });
      void model.refresh();
      void model.showLatest();
      shell.add(widget, 'main');
      await tracker.add(widget);
      shell.activateById(widget.id);
      return widget;
    };

    commands.addCommand(OPEN_PIPELINES, {
      label: trans.__('Open Pipelines'),
      caption: trans.__('Pipeline runs with their steps; run the pipeline with an override'),
      icon: experimentsIcon,
      execute: open
    });
    if (palette) {
      palette.addItem({ command: OPEN_PIPELINES, category: trans.__('CD4ML') });
    }
    if (restorer) {
      void restorer.restore(tracker, { command: OPEN_PIPELINES, name: () => 'pipelines' });
    }
  }
};
