/**
 * Pipelines plugin: the Pipelines view in the main area (palette, and the Experiments
 * dashboard's toolbar), read again every few seconds while visible.
 */
import { mainAreaPlugin } from '../mainArea';
import { PipelinesModel } from './pipelines';
import { PipelinesView } from './pipelinesView';

/** The command that opens the Pipelines view. */
export const OPEN_PIPELINES = 'cd4ml-nb:open-pipelines';
const REFRESH_MS = 10_000;

export const pipelinesPlugin = mainAreaPlugin(
  'cd4ml-nb:pipelines',
  'Pipelines: pipeline runs with their steps, and `pipeline run` started from the Lab.',
  (app, trans) => ({
    name: 'pipelines',
    command: OPEN_PIPELINES,
    label: trans.__('Open Pipelines'),
    caption: trans.__('Pipeline runs with their steps; run the pipeline with an override'),
    title: trans.__('Pipelines'),
    create: () => {
      const model = new PipelinesModel(app.serviceManager.serverSettings);
      return {
        content: new PipelinesView(model, trans),
        model,
        frequency: { interval: REFRESH_MS, backoff: false },
        started: () => void model.showLatest()
      };
    }
  })
);
