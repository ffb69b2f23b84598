import * as React from 'react';

/** Calls `onClick` without submitting anything. */
export function clickHandler(onClick: () => void): (event: React.MouseEvent) => void {
  return event => {
    event.preventDefault();
    onClick();
  };
}

/** A link opened in a new tab without access to this page, hidden while it has no address. */
export function NewTabLink(props: {
  testid: string;
  title: string | undefined;
  href: string | null;
  children: React.ReactNode;
}): JSX.Element {
  return (
    <a
      className="cd4ml-nb-Link"
      data-testid={props.testid}
      title={props.title}
      target="_blank"
      rel="noopener noreferrer"
      href={props.href ?? undefined}
      hidden={props.href === null}
    >
      {props.children}
    </a>
  );
}
