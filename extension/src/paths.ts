/**
 * Notebook paths as the server writes them: executed copies of runs, and paths that name the
 * same file whatever their leading `./` or `/`.
 */

/** Folder (at any depth) the server writes executed notebooks to. */
export const EXECUTED_FOLDER = 'cd4ml-runs';

/** Whether a path is an executed copy written by a run (not a notebook to run or pair). */
export function isExecutedCopy(path: string | null | undefined): boolean {
  return !!path && new RegExp(`(^|/)${EXECUTED_FOLDER}/`).test(path.replace(/^\.?\//, ''));
}

/** Paths compare equal whatever their leading `./` or `/`. */
export function samePath(a: string | null | undefined, b: string | null | undefined): boolean {
  const norm = (p: string) => p.replace(/^(\.\/|\/)+/, '');
  return !!a && !!b && norm(a) === norm(b);
}
