import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';
import * as React from 'react';

import { ModelView, ViewHeader } from '../widgets/modelView';
import { waitFor } from './fakeServer';

class Counter {
  readonly changed = new Signal<Counter, void>(this);
  loading = false;
  count = 0;
  refresh = jest.fn(() => Promise.resolve());
  bump(loading: boolean): void {
    this.count += 1;
    this.loading = loading;
    this.changed.emit();
  }
}

class CounterView extends ModelView<Counter> {
  render(): JSX.Element {
    return (
      <ViewHeader model={this.model} trans={this.trans} title="Counter" reading="Reading…">
        <span data-testid="count">{this.model.count}</span>
      </ViewHeader>
    );
  }
}

describe('ModelView and ViewHeader', () => {
  it('draws the header again on every change, with the hint while reading, and refreshes on click', async () => {
    const model = new Counter();
    const view = new CounterView(model);
    Widget.attach(view, document.body);
    const text = (selector: string) => view.node.querySelector(selector)?.textContent ?? null;
    await waitFor(() => text('[data-testid="count"]') === '0');
    expect(view.hasClass('cd4ml-nb-DashboardView')).toBe(true);
    expect(text('header.cd4ml-nb-DashboardHeader h2')).toBe('Counter');
    expect(text('.cd4ml-nb-Hint')).toBeNull();

    model.bump(true);
    await waitFor(() => text('[data-testid="count"]') === '1');
    expect(text('.cd4ml-nb-Hint')).toBe('Reading…');
    view.node.querySelector<HTMLButtonElement>('button[title="Refresh"]')!.click();
    expect(model.refresh).toHaveBeenCalledTimes(1);

    // Disposed: it no longer listens, so a later change draws nothing.
    view.dispose();
    expect(() => model.bump(false)).not.toThrow();
  });
});
