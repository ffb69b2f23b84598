/**
 * Icons of the extension.
 */
import { LabIcon } from '@jupyterlab/ui-components';

/** A laboratory flask: the Experiments panel. */
const FLASK_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M7 2v2h1v5.4L3.3 18.2A2.5 2.5 0 0 0 5.5 22h13a2.5 2.5 0 0 0 2.2-3.8L16 9.4V4h1V2H7zm3 2h4v5.9l1.5 2.6H8.5L10 9.9V4zm-2.7 10.5h9.4l2.3 4.2a.5.5 0 0 1-.5.8h-13a.5.5 0 0 1-.5-.8l2.3-4.2z"/>
</svg>`;

export const experimentsIcon = new LabIcon({
  name: 'cd4ml-nb:experiments',
  svgstr: FLASK_SVG
});
