/**
 * JupyterLab plugins of cd4ml_nb: they only wire the model, views and commands together.
 *
 * - `cd4ml-nb:model` provides the experiments model and follows the active notebook;
 * - `cd4ml-nb:status` shows the branch and pairing state in the status bar;
 * - `cd4ml-nb:experiments` adds the Experiments panel and the palette commands.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Poll } from '@lumino/polling';

import { experimentsIcon } from './icons';
import { ExperimentsModel } from './model';
import { CommandIDs, IExperimentsModel } from './tokens';
import { ExperimentsPanel } from './widgets/experimentsPanel';
import { StatusItem } from './widgets/statusItem';

/** How often the branch is re-read. */
const STATUS_REFRESH_MS = 30 * 1000;

/** Id of the Experiments panel in the left sidebar. */
export const PANEL_ID = 'cd4ml-nb-experiments';

/** The notebook's path as the server sees it (without a drive prefix). */
function serverPath(app: JupyterFrontEnd, panel: NotebookPanel): string {
  return app.serviceManager.contents.localPath(panel.context.path);
}

/**
 * Model plugin: one experiments model, its branch refreshed every 30 s and its
 * notebook kept to the active one (re-read after every save).
 */
const modelPlugin: JupyterFrontEndPlugin<IExperimentsModel> = {
  id: 'cd4ml-nb:model',
  description: 'State of cd4ml_nb experiments: branch, pairing, parameters, jobs, runs.',
  autoStart: true,
  provides: IExperimentsModel,
  optional: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker | null): IExperimentsModel => {
    const model = new ExperimentsModel({ settings: app.serviceManager.serverSettings });

    // Lives as long as the application; it waits while the page is hidden.
    new Poll({
      factory: () => model.refreshStatus(),
      frequency: { interval: STATUS_REFRESH_MS, backoff: false },
      name: 'cd4ml-nb:status',
      standby: 'when-hidden'
    });
    model.changed.connect((_, change) => {
      if (change === 'status' && model.statusError) {
        console.error('cd4ml_nb server extension did not answer:', model.statusError);
      }
    });

    if (tracker) {
      let followed: NotebookPanel | null = null;
      const onSaved = () => void model.refreshNotebook();
      const onDirty = () => model.setNotebookDirty(followed?.context.model.dirty ?? false);
      const onRenamed = () => {
        if (followed) {
          void model.setNotebook(serverPath(app, followed));
        }
      };
      const follow = (panel: NotebookPanel | null) => {
        if (followed) {
          followed.context.fileChanged.disconnect(onSaved);
          followed.context.pathChanged.disconnect(onRenamed);
          followed.model?.stateChanged.disconnect(onDirty);
        }
        followed = panel;
        if (panel) {
          panel.context.fileChanged.connect(onSaved);
          panel.context.pathChanged.connect(onRenamed);
        }
        void model.setNotebook(panel ? serverPath(app, panel) : null);
        if (panel) {
          // After setNotebook, which starts clean: the document may be dirty already.
          void panel.context.ready.then(() => {
            if (followed === panel) {
              panel.model?.stateChanged.connect(onDirty);
              onDirty();
            }
          });
        }
      };
      tracker.currentChanged.connect((_, panel) => follow(panel));
      follow(tracker.currentWidget);
    }

    return model;
  }
};

/** Status plugin: the branch and the active notebook's pairing in the status bar. */
const statusPlugin: JupyterFrontEndPlugin<void> = {
  id: 'cd4ml-nb:status',
  description: 'Shows the git branch cd4ml_nb tracks experiments under.',
  autoStart: true,
  requires: [IExperimentsModel],
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, model: IExperimentsModel, statusBar: IStatusBar | null) => {
    if (!statusBar) {
      return;
    }
    const item = new StatusItem(model);
    item.id = 'cd4ml-nb-status';
    statusBar.registerStatusItem('cd4ml-nb:status', {
      item,
      align: 'left',
      rank: 100
    });
  }
};

/** Experiments plugin: the sidebar panel and the palette commands. */
const experimentsPlugin: JupyterFrontEndPlugin<void> = {
  id: 'cd4ml-nb:experiments',
  description: 'Run notebooks as branch experiments and compare their runs with the base branch.',
  autoStart: true,
  requires: [IExperimentsModel],
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    model: IExperimentsModel,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const { commands, shell } = app;

    const panel = new ExperimentsPanel(model, {
      run: () => void commands.execute(CommandIDs.run),
      openPath: path => commands.execute('docmanager:open', { path })
    });
    panel.id = PANEL_ID;
    panel.title.icon = experimentsIcon;
    panel.title.caption = 'Experiments';
    panel.title.label = '';
    shell.add(panel, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }

    const show = () => shell.activateById(PANEL_ID);

    commands.addCommand(CommandIDs.run, {
      label: 'Run as experiment',
      caption: 'Run the active notebook as a tracked MLflow run on this branch',
      icon: experimentsIcon,
      isEnabled: () => model.notebookPath !== null && !model.jobActive && !model.submitting,
      execute: () => {
        show();
        return model.run();
      }
    });
    commands.addCommand(CommandIDs.pair, {
      label: 'Pair notebook with .py',
      caption: 'Pair the active notebook with a percent-format .py script (Jupytext)',
      isEnabled: () => model.notebookPath !== null && !model.pairingBusy,
      execute: () => {
        show();
        return model.pair();
      }
    });
    commands.addCommand(CommandIDs.show, {
      label: 'Show experiments',
      caption: 'Show the Experiments panel',
      icon: experimentsIcon,
      execute: show
    });
    model.changed.connect((_, change) => {
      if (change === 'notebook' || change === 'job' || change === 'pairing') {
        commands.notifyCommandChanged(CommandIDs.run);
        commands.notifyCommandChanged(CommandIDs.pair);
      }
    });

    if (palette) {
      const category = 'CD4ML';
      for (const command of [CommandIDs.run, CommandIDs.pair, CommandIDs.show]) {
        palette.addItem({ command, category });
      }
    }
  }
};

export default [modelPlugin, statusPlugin, experimentsPlugin];
