import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Poll } from '@lumino/polling';

import { getStatus } from './api';
import { StatusItem } from './widgets/statusItem';

/** How often the branch shown in the status bar is refreshed. */
const REFRESH_MS = 30 * 1000;

/**
 * Status plugin: reads `GET /cd4ml-nb/status` and shows the branch in the status bar.
 */
const statusPlugin: JupyterFrontEndPlugin<void> = {
  id: 'cd4ml-nb:status',
  description: 'Shows the git branch cd4ml_nb tracks experiments under.',
  autoStart: true,
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null) => {
    const settings = app.serviceManager.serverSettings;

    if (!statusBar) {
      getStatus(settings)
        .then(status => console.debug('cd4ml-nb status', status))
        .catch(reason =>
          console.error('cd4ml_nb server extension did not answer', reason)
        );
      return;
    }

    const item = new StatusItem();
    item.id = 'cd4ml-nb-status';
    statusBar.registerStatusItem('cd4ml-nb:status', {
      item,
      align: 'left',
      rank: 100
    });

    const poll = new Poll({
      factory: async () => {
        try {
          item.showStatus(await getStatus(settings));
        } catch (reason) {
          item.showError(reason);
          console.error('cd4ml_nb server extension did not answer', reason);
        }
      },
      frequency: { interval: REFRESH_MS, backoff: false },
      name: 'cd4ml-nb:status',
      standby: 'when-hidden'
    });
    item.disposed.connect(() => poll.dispose());
  }
};

export default [statusPlugin];
