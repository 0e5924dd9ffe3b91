// The one error middleware of the HTTP API (STYLE §4): every failure leaves as
// `{"error": {"code", "message", "details?"}}` with a fitting status. Our own faults are 500
// and logged; request bodies are never logged (they hold keys, passwords and mail).
import type { ErrorRequestHandler, RequestHandler } from 'express';
import { z } from 'zod';
import type { Logger } from '../log.ts';
import { ApiError } from '../services/errors.ts';
import { SmtpError } from '../smtp/smtp-error.ts';

export interface FieldError {
  path: string;
  message: string;
}

export function zodFields(err: z.core.$ZodError): FieldError[] {
  return err.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
}

/** Errors raised by body-parser carry `type` and an HTTP status (http-errors). */
interface HttpError extends Error {
  status?: number;
  statusCode?: number;
  type?: string;
  expose?: boolean;
}

const PARSER_ERRORS: Record<string, { status: number; code: string; message: string }> = {
  'entity.parse.failed': { status: 400, code: 'malformed_json', message: 'the request body is not valid JSON' },
  'entity.too.large': { status: 413, code: 'payload_too_large', message: 'the request body is too large' },
  'charset.unsupported': { status: 415, code: 'unsupported_charset', message: 'the request body charset is not supported' },
  'encoding.unsupported': { status: 415, code: 'unsupported_encoding', message: 'the request body encoding is not supported' },
  'request.aborted': { status: 400, code: 'request_aborted', message: 'the request was aborted' },
  'request.size.invalid': { status: 400, code: 'bad_request', message: 'the request body does not match its Content-Length' },
};

/** Pipeline refusals whose HTTP status is not simply "the request is unprocessable". */
const STATUS_BY_SMTP_CODE: Record<string, number> = {
  invalid_key: 401,
  auth_required: 401,
  forbidden: 403,
  tenant_suspended: 403,
  tenant_mismatch: 403,
  domain_not_verified: 403,
  rate_limited: 429,
  message_too_large: 413,
};

/**
 * The HTTP answer to a pipeline refusal (`POST /v1/messages` runs the SMTP pipeline): the same
 * code and text, with the SMTP reply alongside. A temporary refusal (4xx over SMTP) is 503 with
 * Retry-After unless it has its own status (429); a permanent one is 422.
 */
export function smtpErrorStatus(err: SmtpError): number {
  if (err.responseCode === 552) return 413;
  return STATUS_BY_SMTP_CODE[err.code] ?? (err.permanent ? 422 : 503);
}

export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, next) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    if (err instanceof ApiError) {
      res.status(err.status).json(err.toJSON());
      return;
    }
    if (err instanceof SmtpError) {
      const status = smtpErrorStatus(err);
      if (status === 429 || status === 503) {
        const retryAfter = (err as { retryAfterSeconds?: number }).retryAfterSeconds;
        res.set('Retry-After', String(Math.max(1, Math.ceil(retryAfter ?? 60))));
      }
      if (status === 503 && err.code === 'internal_error') log.error({ method: req.method, path: req.path }, 'pipeline failed with an internal error');
      res.status(status).json(new ApiError(status, err.code, err.text, { smtp: `${err.responseCode} ${err.message}` }).toJSON());
      return;
    }
    if (err instanceof z.core.$ZodError) {
      const fields = zodFields(err);
      res.status(422).json(new ApiError(422, 'validation_error', 'the request is invalid', { fields }).toJSON());
      return;
    }
    const parser = PARSER_ERRORS[(err as HttpError)?.type ?? ''];
    if (parser) {
      res.status(parser.status).json(new ApiError(parser.status, parser.code, parser.message).toJSON());
      return;
    }
    const e = err as HttpError;
    const status = e?.status ?? e?.statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500 && e.expose) {
      res.status(status).json(new ApiError(status, 'bad_request', e.message).toJSON());
      return;
    }
    // Method, path and the error only: never the body, headers or query (they may hold secrets).
    log.error({ err, method: req.method, path: req.path }, 'unhandled API error');
    res.status(500).json(new ApiError(500, 'internal_error', 'internal error').toJSON());
  };
}

export const notFoundHandler: RequestHandler = (req, res) => {
  res.status(404).json(new ApiError(404, 'not_found', `no such endpoint: ${req.method} ${req.path}`).toJSON());
};
