// API-facing errors (STYLE §4): small classes with an HTTP status and a code, mapped to the
// SPEC §7 shape by one Express error middleware. Services throw them; the CLI prints them.

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
  }

  toJSON(): { error: { code: string; message: string; details?: unknown } } {
    return { error: { code: this.code, message: this.message, ...(this.details === undefined ? {} : { details: this.details }) } };
  }
}

export const notFound = (what: string, id: string): ApiError => new ApiError(404, 'not_found', `${what} "${id}" not found`);
export const conflict = (message: string): ApiError => new ApiError(409, 'conflict', message);
export const invalid = (message: string, fields?: { path: string; message: string }[]): ApiError =>
  new ApiError(422, 'validation_error', message, fields ? { fields } : undefined);

/** PostgreSQL unique_violation. */
export function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: string }).code === '23505';
}
