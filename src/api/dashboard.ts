// The dashboard (SPEC §8): one static page whose scripts read the JSON API with the credential
// the user signs in with. Nothing is rendered on the server and nothing comes from a CDN (relays
// often run where browsers cannot reach the internet): the page, its modules and its styles live
// in src/dashboard/, and the chart library is served from its npm package, not copied into git.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { Router, type RequestHandler } from 'express';

const DASHBOARD_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dashboard');
const UPLOT_DIST = path.dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.esm.js'));

/** The vendored files the page loads, by the name it asks for; nothing else of the package is served. */
const VENDOR: Record<string, string> = {
  'uPlot.esm.js': path.join(UPLOT_DIST, 'uPlot.esm.js'),
  'uPlot.min.css': path.join(UPLOT_DIST, 'uPlot.min.css'),
};

/**
 * Scripts from this origin only, never inline; no other host at all. Inline styles are allowed
 * because the chart sets them, and because a preview's srcdoc frame inherits this policy and
 * e-mail HTML is styled inline. Frames: the preview is an about:srcdoc document (covered by
 * 'self'); blob: and data: for downloads. The preview adds its own stricter policy (app.js).
 */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-src 'self' blob: data:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const securityHeaders: RequestHandler = (_req, res, next) => {
  res.set('Content-Security-Policy', DASHBOARD_CSP);
  // The credential is in the page's sessionStorage: no referrer leaks the URL, no site frames us.
  res.set('Referrer-Policy', 'no-referrer');
  res.set('X-Frame-Options', 'DENY');
  next();
};

/** The assets are not fingerprinted: browsers revalidate (ETag) so an upgrade shows at once. */
const revalidate = { cacheControl: true, maxAge: 0, etag: true, lastModified: true, index: false, dotfiles: 'ignore' } as const;

const vendor: RequestHandler = (req, res, next) => {
  const file = Object.hasOwn(VENDOR, req.path.slice(1)) ? VENDOR[req.path.slice(1)] : undefined;
  if (!file || (req.method !== 'GET' && req.method !== 'HEAD')) return next();
  res.sendFile(file, revalidate, (err) => err && next(err));
};

/** Mounted at /dashboard: the page at / and its files under /assets/. */
export function dashboardRouter(): Router {
  const router = Router();
  router.use(securityHeaders);
  router.get('/', (_req, res, next) => {
    res.sendFile(path.join(DASHBOARD_DIR, 'index.html'), revalidate, (err) => err && next(err));
  });
  router.use('/assets/vendor', vendor);
  router.use('/assets', express.static(DASHBOARD_DIR, revalidate));
  return router;
}
