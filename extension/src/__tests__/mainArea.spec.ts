import { ILayoutRestorer, JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { nullTranslator } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { addMainAreaView, mainAreaPlugin } from '../mainArea';

/** The parts of JupyterLab the helper uses: commands, the shell, the palette and the restorer. */
function fakeLab() {
  const commands: Record<string, { label: string; caption: string; execute: () => Promise<MainAreaWidget<Widget>> }> = {};
  const app = {
    commands: { addCommand: (id: string, options: (typeof commands)[string]) => (commands[id] = options) },
    shell: { add: jest.fn(), activateById: jest.fn() }
  };
  const palette = { addItem: jest.fn() };
  const restorer = { restore: jest.fn(() => Promise.resolve()) };
  return {
    commands,
    app,
    palette,
    restorer,
    lab: app as unknown as JupyterFrontEnd,
    asPalette: palette as unknown as ICommandPalette,
    asRestorer: restorer as unknown as ILayoutRestorer
  };
}

function fakeModel() {
  return { refresh: jest.fn(() => Promise.resolve()), dispose: jest.fn() };
}

describe('addMainAreaView', () => {
  it('adds the command, its palette item and its restoration under one name', () => {
    const fake = fakeLab();
    const trans = nullTranslator.load('cd4ml_nb');
    const tracker = addMainAreaView(fake.lab, {
      name: 'things',
      command: 'cd4ml-nb:open-things',
      label: 'Open Things',
      caption: 'All the things',
      title: 'Things',
      create: () => ({ content: new Widget(), model: fakeModel(), frequency: { interval: 60_000 } }),
      trans,
      palette: fake.asPalette,
      restorer: fake.asRestorer
    });
    expect(fake.commands['cd4ml-nb:open-things']).toMatchObject({ label: 'Open Things', caption: 'All the things' });
    expect(fake.palette.addItem).toHaveBeenCalledWith({ command: 'cd4ml-nb:open-things', category: 'CD4ML' });
    expect(fake.restorer.restore).toHaveBeenCalledWith(tracker, expect.objectContaining({ command: 'cd4ml-nb:open-things' }));
    const options = (fake.restorer.restore.mock.calls[0] as unknown[])[1] as { name: () => string };
    expect(options.name()).toBe('things');
    expect(tracker.namespace).toBe('cd4ml-nb-things');
  });

  it('opens one view, reads its model, and brings it back instead of opening another', async () => {
    const fake = fakeLab();
    const model = fakeModel();
    const extra = { dispose: jest.fn(), isDisposed: false };
    const started = jest.fn(() => extra);
    const create = jest.fn(() => Promise.resolve({ content: new Widget(), model, frequency: { interval: 60_000 }, started }));
    addMainAreaView(fake.lab, {
      name: 'things',
      command: 'open-things',
      label: 'Open Things',
      caption: '',
      title: 'Things',
      create,
      trans: nullTranslator.load('cd4ml_nb'),
      palette: null,
      restorer: null
    });
    const widget = await fake.commands['open-things'].execute();
    expect(widget.id).toBe('cd4ml-nb-things');
    expect(widget.title.label).toBe('Things');
    expect(widget.title.closable).toBe(true);
    expect(fake.app.shell.add).toHaveBeenCalledWith(widget, 'main');
    expect(fake.app.shell.activateById).toHaveBeenCalledWith('cd4ml-nb-things');
    expect(model.refresh).toHaveBeenCalledTimes(1);
    expect(started).toHaveBeenCalledWith(widget, expect.objectContaining({ name: 'cd4ml-nb:things' }));

    expect(await fake.commands['open-things'].execute()).toBe(widget);
    expect(create).toHaveBeenCalledTimes(1);
    expect(fake.app.shell.activateById).toHaveBeenCalledTimes(2);

    // Closed: the model, the poll and what `started` set up go with it; the next open makes a new one.
    widget.dispose();
    expect(model.dispose).toHaveBeenCalledTimes(1);
    expect(extra.dispose).toHaveBeenCalledTimes(1);
    const again = await fake.commands['open-things'].execute();
    expect(again).not.toBe(widget);
    expect(create).toHaveBeenCalledTimes(2);
    again.dispose();
  });
});

describe('mainAreaPlugin', () => {
  it('adds its view without a palette, restorer or translator', async () => {
    const fake = fakeLab();
    const model = fakeModel();
    const plugin = mainAreaPlugin('cd4ml-nb:things', 'Things.', (_app, trans) => ({
      name: 'things',
      command: 'open-things',
      label: trans.__('Open Things'),
      caption: '',
      title: trans.__('Things'),
      create: () => ({ content: new Widget(), model, frequency: { interval: 60_000 } })
    }));
    expect(plugin).toMatchObject({ id: 'cd4ml-nb:things', autoStart: true });
    plugin.activate(fake.lab, null, null, null);
    const widget = await fake.commands['open-things'].execute();
    expect(widget.title.label).toBe('Things');
    widget.dispose();
    expect(model.dispose).toHaveBeenCalledTimes(1);
  });
});
