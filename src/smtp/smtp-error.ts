// One error type for SMTP replies (STYLE §2). The session turns it into the reply; anything
// else that escapes becomes 451 4.3.0, never a 5xx for our own fault.

export class SmtpError extends Error {
  readonly responseCode: number;
  readonly enhanced: string;
  /** Machine-readable reason, shared with the HTTP API's error codes. */
  readonly code: string;

  constructor(responseCode: number, enhanced: string, text: string, code = 'rejected') {
    super(`${enhanced} ${text}`);
    this.name = 'SmtpError';
    this.responseCode = responseCode;
    this.enhanced = enhanced;
    this.code = code;
  }

  get text(): string {
    return this.message.slice(this.enhanced.length + 1);
  }

  get permanent(): boolean {
    return this.responseCode >= 500;
  }
}

export const internalError = (): SmtpError =>
  new SmtpError(451, '4.3.0', 'Temporary local problem, please try again later', 'internal_error');

/** Normalises anything thrown into the SmtpError to answer with. */
export function toSmtpError(err: unknown): SmtpError {
  return err instanceof SmtpError ? err : internalError();
}
