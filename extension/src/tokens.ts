/**
 * Contracts shared by the frontend and the cd4ml_nb server extension.
 *
 * These types mirror the JSON payloads returned under `/cd4ml-nb/…`;
 * keep them in step with `cd4ml_nb/routes.py`.
 */

/** URL namespace of every cd4ml_nb REST endpoint. */
export const API_NAMESPACE = 'cd4ml-nb';

/** Payload of `GET /cd4ml-nb/status`. */
export interface IStatus {
  /** Version of the cd4ml_nb Python package serving the API. */
  version: string;
  /** Current git branch, or `null` when the server root is not in a git work tree. */
  branch: string | null;
  /** Branch that experiments are compared against (e.g. `main`). */
  base_branch: string;
  /** MLflow tracking URI runs are written to. */
  tracking_uri: string;
  /** URL of an MLflow UI for this store, when one is known. */
  mlflow_ui_url: string | null;
}
