/**
 * JupyterLab plugins of cd4ml_nb: they only wire the models, views and commands together.
 *
 * - `cd4ml-nb:runs` provides the runs source the panel and the dashboard read through;
 * - `cd4ml-nb:model` provides the experiments model and follows the active notebook;
 * - `cd4ml-nb:status` shows the branch and pairing state in the status bar;
 * - `cd4ml-nb:experiments` adds the Experiments panel and the palette commands;
 * - `cd4ml-nb:dashboard` adds the Experiments dashboard (main area) to the palette and launcher.
 *
 * Intervals, the default metric and the base branch come from the `cd4ml-nb:model`
 * settings (`schema/model.json`) and follow their changes (`settings.ts`); strings go through
 * the `cd4ml_nb` translation domain.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, ToolbarButton } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { Poll } from '@lumino/polling';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { shortRunId } from './dashboard/charts';
import { DashboardModel } from './dashboard/model';
import { OPEN_PIPELINES, pipelinesPlugin } from './dashboard/pipelinesPlugin';
import { branchesPlugin } from './dashboard/branchesPlugin';
import { experimentsIcon } from './icons';
import { addMainAreaView } from './mainArea';
import { ExperimentsModel } from './model';
import { RunsSource } from './models/runsSource';
import { isWebUrl } from './runs';
import { isExecutedCopy } from './paths';
import { Cd4mlSettings, followDashboardSettings, followExperimentsSettings, runsFrequency, statusFrequency } from './settings';
import { CommandIDs, IExperimentsModel, IRunsSource } from './tokens';
import { DashboardView, IDashboardActions } from './widgets/dashboard';
import { ExperimentsPanel } from './widgets/experimentsPanel';
import { StatusItem } from './widgets/statusItem';

/**
 * The title of an executed copy: `train · 1a2b3c4d` (the run id when known, else the
 * run folder's name), so it is not mistaken for the notebook it was run from.
 */
export function executedTitle(path: string, runId?: string | null): string {
  const stem = PathExt.basename(path, PathExt.extname(path));
  const folder = PathExt.basename(PathExt.dirname(path));
  return `${stem} · ${runId ? shortRunId(runId) : folder.slice(0, 8)}`;
}

/**
 * Title an executed copy's tab after its run. A document widget renames its file when its
 * label changes: that link (title → widget) is cut first, so the label is only a label.
 */
export function labelExecuted(widget: Widget, path: string, runId?: string | null): void {
  Signal.disconnectBetween(widget.title, widget);
  widget.title.label = executedTitle(path, runId);
  widget.title.caption = `${path}\n${widget.title.caption}`;
  widget.title.className = `${widget.title.className} cd4ml-nb-ExecutedTab`;
}

/** Id of the Experiments panel in the left sidebar. */
export const PANEL_ID = 'cd4ml-nb-experiments';

/** The notebook's path as the server sees it (without a drive prefix). */
function serverPath(app: JupyterFrontEnd, panel: NotebookPanel): string {
  return app.serviceManager.contents.localPath(panel.context.path);
}

/** Runs plugin: the one runs source; a job that ends invalidates it, the panel and dashboard read again. */
const runsPlugin: JupyterFrontEndPlugin<IRunsSource> = {
  id: 'cd4ml-nb:runs',
  description: 'The runs of this branch and the base branch, shared by the panel and the dashboard.',
  autoStart: true,
  provides: IRunsSource,
  activate: (app: JupyterFrontEnd): IRunsSource => new RunsSource({ settings: app.serviceManager.serverSettings })
};

/**
 * Model plugin: one experiments model, its branch refreshed every 30 s (the setting) and its
 * notebook kept to the active one (re-read after every save).
 */
const modelPlugin: JupyterFrontEndPlugin<IExperimentsModel> = {
  id: 'cd4ml-nb:model',
  description: 'State of cd4ml_nb experiments: branch, pairing, parameters, jobs, runs.',
  autoStart: true,
  provides: IExperimentsModel,
  requires: [IRunsSource],
  optional: [INotebookTracker, ISettingRegistry, ITranslator],
  activate: async (
    app: JupyterFrontEnd,
    runs: IRunsSource,
    tracker: INotebookTracker | null,
    registry: ISettingRegistry | null,
    translator: ITranslator | null
  ): Promise<IExperimentsModel> => {
    const config = await Cd4mlSettings.load(registry);
    const model = new ExperimentsModel({
      settings: app.serviceManager.serverSettings,
      pollInterval: config.values.jobPollInterval,
      trans: (translator ?? nullTranslator).load('cd4ml_nb'),
      runs
    });

    // Lives as long as the application; it waits while the page is hidden.
    const statusPoll = new Poll({
      factory: () => model.refreshStatus(),
      frequency: statusFrequency(config.values),
      name: 'cd4ml-nb:status',
      standby: 'when-hidden'
    });
    followExperimentsSettings(config, model, statusPoll);
    model.changed.connect((_, change) => {
      if (change === 'status' && model.statusError) {
        console.error('cd4ml_nb server extension did not answer:', model.statusError);
      }
    });

    if (tracker) {
      let followed: NotebookPanel | null = null;
      const onSaved = () => void model.refreshNotebook();
      // Under real-time collaboration the server merges a sync into the live document: unsaved
      // edits are kept, so they block nothing.
      const onDirty = () =>
        model.setNotebookDirty(
          !(followed?.context.model.collaborative ?? false) && (followed?.context.model.dirty ?? false)
        );
      const onRenamed = () => {
        if (followed) {
          void model.setNotebook(serverPath(app, followed));
        }
      };
      // An executed copy is titled after its run, not like the notebook it was run from.
      tracker.widgetAdded.connect((_, panel) => {
        const path = serverPath(app, panel);
        if (isExecutedCopy(path) && !panel.title.label.includes(' · ')) {
          labelExecuted(panel, path);
        }
      });
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
      // A sync rewrote a side on disk: show what is there now (the panel refuses to sync unsaved work).
      model.changed.connect((_, change) => {
        // Never with a collaboration room open: the server merged the sync into everyone's document,
        // and a revert would push the disk into it.
        if (
          change === 'synced' &&
          followed &&
          !followed.context.model.collaborative &&
          !followed.context.model.dirty
        ) {
          void followed.context.revert();
        }
      });
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
  optional: [IStatusBar, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    model: IExperimentsModel,
    statusBar: IStatusBar | null,
    translator: ITranslator | null
  ) => {
    if (!statusBar) {
      return;
    }
    const item = new StatusItem(model, (translator ?? nullTranslator).load('cd4ml_nb'));
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
  optional: [ICommandPalette, ILayoutRestorer, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    model: IExperimentsModel,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    translator: ITranslator | null
  ) => {
    const { commands, shell } = app;
    const trans = (translator ?? nullTranslator).load('cd4ml_nb');

    const panel = new ExperimentsPanel(model, {
      run: () => void commands.execute(CommandIDs.run),
      openPath: async path => {
        const widget = await commands.execute('docmanager:open', { path });
        if (widget instanceof Widget && isExecutedCopy(path)) {
          labelExecuted(widget, path, model.job?.run_id);
        }
        return widget;
      },
      openDashboard: () => void commands.execute(CommandIDs.openDashboard)
    }, trans);
    panel.id = PANEL_ID;
    panel.title.icon = experimentsIcon;
    panel.title.caption = trans.__('Experiments');
    panel.title.label = '';
    shell.add(panel, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }

    const show = () => shell.activateById(PANEL_ID);

    commands.addCommand(CommandIDs.run, {
      label: trans.__('Run as experiment'),
      caption: trans.__('Run the active notebook as a tracked MLflow run on this branch'),
      icon: experimentsIcon,
      isEnabled: () =>
        model.notebookPath !== null && !model.jobActive && !model.submitting && model.runBlocked === null,
      execute: () => {
        show();
        return model.run();
      }
    });
    commands.addCommand(CommandIDs.pair, {
      label: trans.__('Pair notebook with .py'),
      caption: trans.__('Pair the active notebook with a percent-format .py script (Jupytext)'),
      isEnabled: () => model.notebookPath !== null && !model.pairingBusy,
      execute: () => {
        show();
        return model.pair();
      }
    });
    commands.addCommand(CommandIDs.show, {
      label: trans.__('Show experiments'),
      caption: trans.__('Show the Experiments panel'),
      icon: experimentsIcon,
      execute: show
    });
    model.changed.connect((_, change) => {
      if (change === 'notebook' || change === 'job' || change === 'pairing' || change === 'form') {
        commands.notifyCommandChanged(CommandIDs.run);
        commands.notifyCommandChanged(CommandIDs.pair);
      }
    });

    if (palette) {
      const category = trans.__('CD4ML');
      for (const command of [CommandIDs.run, CommandIDs.pair, CommandIDs.show]) {
        palette.addItem({ command, category });
      }
    }
  }
};

/**
 * Dashboard plugin: the Experiments dashboard in the main area (palette, launcher and the
 * panel's button), and the MLflow UI the server starts on demand and proxies.
 */
const dashboardPlugin: JupyterFrontEndPlugin<void> = {
  id: 'cd4ml-nb:dashboard',
  description: 'Experiments dashboard: runs of this branch beside the base branch, charts and comparison.',
  autoStart: true,
  requires: [IExperimentsModel, IRunsSource],
  optional: [ICommandPalette, ILauncher, ILayoutRestorer, ISettingRegistry, ITranslator],
  activate: async (
    app: JupyterFrontEnd,
    experiments: IExperimentsModel,
    runs: IRunsSource,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    restorer: ILayoutRestorer | null,
    registry: ISettingRegistry | null,
    translator: ITranslator | null
  ) => {
    const { commands } = app;
    const trans: TranslationBundle = (translator ?? nullTranslator).load('cd4ml_nb');
    // Commands first: the layout restorer may run them before the settings are read.
    const ready = Cd4mlSettings.load(registry);

    addMainAreaView(app, {
      name: 'dashboard',
      command: CommandIDs.openDashboard,
      label: trans.__('Open Experiments Dashboard'),
      caption: trans.__("This branch's runs beside the base branch's: table, charts and comparison"),
      title: trans.__('Experiments'),
      create: async () => {
        const config = await ready;
        // Runs through the source the panel shares; the branch through the experiments model.
        const model = new DashboardModel({
          settings: app.serviceManager.serverSettings,
          runs,
          status: experiments,
          pageSize: config.values.pageSize,
          defaultMetric: config.values.defaultMetric || null,
          baseBranch: config.values.baseBranch || null
        });
        const actions: IDashboardActions = {
          openExecuted: (path, runId) =>
            void commands.execute('docmanager:open', { path }).then(widget => {
              if (widget instanceof Widget) {
                labelExecuted(widget, path, runId);
              }
            }),
          // The configured MLflow UI (`mlflow_ui_url`), else the one the server starts on demand
          // and proxies under /cd4ml-nb/mlflow/ for a SQLite store.
          mlflowRunUrl: (experiment, runId) => experiments.mlflowRunUrl(experiment, runId)
        };
        return {
          content: new DashboardView(model, actions, trans),
          model,
          // Read again every interval while visible (the model itself reads again when a job ends).
          frequency: runsFrequency(config.values),
          started: (widget, poll) => {
            widget.toolbar.addItem(
              'pipelines',
              new ToolbarButton({
                label: trans.__('Pipelines'),
                tooltip: trans.__('Pipeline runs with their steps; run the pipeline with an override'),
                onClick: () => void commands.execute(OPEN_PIPELINES)
              })
            );
            return followDashboardSettings(config, model, poll);
          }
        };
      },
      trans,
      palette,
      restorer
    });
    commands.addCommand(CommandIDs.openMlflow, {
      label: trans.__('Open MLflow UI'),
      caption: trans.__("The MLflow UI of this project's tracking store, started on demand"),
      isEnabled: () => !!experiments.mlflowUiUrl(),
      execute: () => {
        const url = experiments.mlflowUiUrl();
        if (isWebUrl(url)) {
          window.open(url, '_blank', 'noopener');
        }
      }
    });
    palette?.addItem({ command: CommandIDs.openMlflow, category: trans.__('CD4ML') });
    launcher?.add({ command: CommandIDs.openDashboard, category: trans.__('Other'), rank: 1 });
  }
};

export default [
  runsPlugin,
  modelPlugin,
  statusPlugin,
  experimentsPlugin,
  dashboardPlugin,
  pipelinesPlugin,
  branchesPlugin
];
