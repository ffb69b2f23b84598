/**
 * Building DOM nodes from untrusted data: every string becomes a text node or an
 * attribute value, never markup. Nothing in this extension sets `innerHTML`.
 */

/** What {@link h} can set on an element. */
export interface IElementProps {
  className?: string;
  /** Sets `data-testid` (stable hook for the browser tests). */
  testid?: string;
  title?: string;
  /** Text content (as text, not HTML). */
  text?: string;
  /** Further attributes, set with `setAttribute`. */
  attrs?: Record<string, string | null | undefined>;
}

/** A child: a node, a string (becomes a text node), or nothing. */
export type Child = Node | string | null | undefined | false;

/** Create an HTML element with text-only content. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: IElementProps = {},
  children: ReadonlyArray<Child> = []
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) {
    node.className = props.className;
  }
  if (props.testid) {
    node.setAttribute('data-testid', props.testid);
  }
  if (props.title !== undefined) {
    node.title = props.title;
  }
  for (const [name, value] of Object.entries(props.attrs ?? {})) {
    if (value !== null && value !== undefined) {
      node.setAttribute(name, value);
    }
  }
  if (props.text !== undefined) {
    node.textContent = props.text;
  }
  append(node, children);
  return node;
}

/** Append children, strings as text nodes. */
export function append(parent: Node, children: ReadonlyArray<Child>): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    parent.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
  }
}

/** Replace every child of a node. */
export function replaceChildren(parent: Node, children: ReadonlyArray<Child>): void {
  while (parent.firstChild) {
    parent.removeChild(parent.firstChild);
  }
  append(parent, children);
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Create an SVG element; attribute values are set with `setAttribute`. */
export function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number> = {},
  children: ReadonlyArray<Child> = []
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

/** A `<button>` that calls `onClick`. */
export function button(
  label: string,
  onClick: () => void,
  props: IElementProps = {}
): HTMLButtonElement {
  const node = h('button', { ...props, text: label });
  node.type = 'button';
  node.classList.add('jp-Button', 'cd4ml-nb-Button');
  node.addEventListener('click', event => {
    event.preventDefault();
    onClick();
  });
  return node;
}
