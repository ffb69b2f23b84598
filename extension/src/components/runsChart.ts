/**
 * A small SVG chart of one metric per run, in start order, points coloured by branch.
 */
import { formatMetric, formatTime } from '../runs';
import { IBranchRun, IExperimentsModel } from '../tokens';
import { h, replaceChildren, svg } from './dom';

const WIDTH = 320;
const HEIGHT = 130;
const PAD = { left: 46, right: 12, top: 10, bottom: 16 };
/** Room between the axes and the outermost points. */
const INSET = 8;

export class RunsChart {
  constructor(model: IExperimentsModel) {
    this._model = model;
    this.node = h('div', { className: 'cd4ml-nb-Chart', testid: 'cd4ml-runs-chart' });
  }

  readonly node: HTMLElement;

  update(): void {
    const model = this._model;
    const metric = model.metric;
    if (metric === null) {
      replaceChildren(this.node, []);
      this.node.hidden = true;
      return;
    }
    this.node.hidden = false;
    const points = model.allRuns
      .filter(run => typeof run.metrics?.[metric] === 'number' && Number.isFinite(run.metrics[metric]))
      .sort((a, b) => (a.start_time ?? 0) - (b.start_time ?? 0));
    const legend = this._legend();
    if (points.length === 0) {
      replaceChildren(this.node, [
        h('p', { className: 'cd4ml-nb-Hint', text: `No run logged ${metric} yet.` }),
        legend
      ]);
      return;
    }
    const values = points.map(run => run.metrics[metric]);
    let low = Math.min(...values);
    let high = Math.max(...values);
    if (low === high) {
      const pad = Math.abs(low) * 0.1 || 1;
      low -= pad;
      high += pad;
    }
    const plotW = WIDTH - PAD.left - PAD.right;
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    const spanW = plotW - 2 * INSET;
    const spanH = plotH - 2 * INSET;
    const x = (i: number) =>
      PAD.left + INSET + (points.length === 1 ? spanW / 2 : (i * spanW) / (points.length - 1));
    const y = (v: number) => PAD.top + INSET + spanH - ((v - low) / (high - low)) * spanH;
    const lastJobRun = model.job?.run_id ?? null;

    const chart = svg(
      'svg',
      {
        class: 'cd4ml-nb-ChartSvg',
        viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
        width: WIDTH,
        height: HEIGHT,
        role: 'img',
        'aria-label': `${metric} per run`
      },
      [
        svg('line', { class: 'cd4ml-nb-Axis', x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: PAD.top + plotH }),
        svg('line', {
          class: 'cd4ml-nb-Axis',
          x1: PAD.left,
          y1: PAD.top + plotH,
          x2: PAD.left + plotW,
          y2: PAD.top + plotH
        }),
        svg('text', { class: 'cd4ml-nb-AxisLabel', x: PAD.left - 4, y: y(high) + 3, 'text-anchor': 'end' }, [
          formatMetric(high)
        ]),
        svg('text', { class: 'cd4ml-nb-AxisLabel', x: PAD.left - 4, y: y(low) + 3, 'text-anchor': 'end' }, [
          formatMetric(low)
        ]),
        svg('text', {
          class: 'cd4ml-nb-AxisLabel',
          x: PAD.left + plotW / 2,
          y: HEIGHT - 2,
          'text-anchor': 'middle'
        }, ['runs, oldest → newest']),
        ...points.map((run, i) => this._point(run, metric, x(i), y(run.metrics[metric]), run.run_id === lastJobRun))
      ]
    );
    replaceChildren(this.node, [chart, legend]);
  }

  private _point(run: IBranchRun, metric: string, cx: number, cy: number, latest: boolean): SVGElement {
    const title = [
      `${run.branch ?? 'no-git'} · ${run.status}`,
      `${metric} = ${run.metrics[metric]}`,
      formatTime(run.start_time),
      `run ${run.run_id}`
    ].join('\n');
    return svg(
      'circle',
      {
        class: `cd4ml-nb-Point cd4ml-nb-mod-${run.side}${latest ? ' cd4ml-nb-mod-latest' : ''}`,
        cx: cx.toFixed(1),
        cy: cy.toFixed(1),
        r: latest ? 5 : 3.5,
        'data-run-id': run.run_id,
        'data-side': run.side
      },
      [svg('title', {}, [title])]
    );
  }

  private _legend(): HTMLElement {
    const sections = this._model.runs;
    return h(
      'div',
      { className: 'cd4ml-nb-Legend', testid: 'cd4ml-chart-legend' },
      sections.map(section =>
        h('span', { className: 'cd4ml-nb-LegendItem', attrs: { 'data-side': section.side } }, [
          h('span', { className: `cd4ml-nb-Swatch cd4ml-nb-mod-${section.side}` }),
          `${section.branch ?? 'no-git'}${section.side === 'base' ? ' (base)' : ''}`
        ])
      )
    );
  }

  private _model: IExperimentsModel;
}
