// Stage: open and click tracking (SPEC §6), after render and before build, so the DKIM signature
// covers the rewritten HTML. The tenant's defaults apply unless the message's
// X-Transactional-Track-Opens/-Clicks headers (apply-headers.ts) said otherwise.
//
// htmlparser2 finds the tags and their exact source offsets; the HTML is edited by splicing the
// original string at those offsets, never re-serialised, so everything we do not rewrite stays
// byte for byte as the sender wrote it (a serialiser would re-quote, re-case and re-escape).
import { Parser } from 'htmlparser2';
import { uuidv7 } from '../crypto.ts';
import { isHttpUrl, MAX_TRACKED_URL_LENGTH, type TrackingTokens } from '../events/tracking-tokens.ts';
import { escapeHtml } from './apply-headers.ts';
import type { Submission } from './submission.ts';

/** The per-link opt-out: the link is left alone and the attribute itself removed. */
export const NO_TRACK_ATTRIBUTE = 'data-txrelay-no-track';
/** The attribute in any case, found without a lower-cased copy of the whole HTML. */
const NO_TRACK_ANY_CASE = new RegExp(NO_TRACK_ATTRIBUTE, 'i');
const LINK_TAGS = new Set(['a', 'area']);

export interface TrackingLinks {
  /** The signed tracking URL for an original link. */
  click(url: string): string;
  /** The open pixel's URL, or undefined when opens are not tracked. */
  pixel?: string;
  /** False: links are left as they are (the no-track attributes still go). */
  trackClicks: boolean;
}

interface Edit {
  start: number;
  end: number;
  text: string;
}

interface Attribute {
  name: string;
  value: string;
  /** Source span [start, end) of the whole attribute, name to closing quote. */
  start: number;
  end: number;
}

/** The link worth tracking in an href, or undefined (mailto:, tel:, #anchors, relative, …). */
function trackableUrl(href: string): string | undefined {
  // Browsers strip leading and trailing whitespace from URLs (WHATWG URL: "strip leading and
  // trailing C0 control or space"); the signed URL is the one the browser would have followed.
  const url = href.trim();
  if (url.length > MAX_TRACKED_URL_LENGTH || !isHttpUrl(url)) return undefined;
  return url;
}

function pixelTag(src: string): string {
  return `<img src="${escapeHtml(src)}" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0;margin:0;padding:0">`;
}

/** Removes an attribute and the whitespace before it, so the tag keeps its spacing. */
function removal(html: string, attr: Attribute): Edit {
  let start = attr.start;
  while (start > 0 && /\s/.test(html[start - 1])) start--;
  // `<a href=x data-txrelay-no-track/>`: without a space the slash would join the unquoted value.
  const text = html[attr.end] === '/' && start < attr.start ? ' ' : '';
  return { start, end: attr.end, text };
}

function linkEdits(html: string, attrs: Attribute[], links: TrackingLinks): { edits: Edit[]; tracked: number } {
  const noTrack = attrs.filter((a) => a.name === NO_TRACK_ATTRIBUTE);
  const edits = noTrack.map((a) => removal(html, a));
  // A browser follows the first href of a tag and ignores any repeat (HTML: duplicate attributes
  // are dropped), so only the first is considered.
  const href = attrs.find((a) => a.name === 'href');
  const url = href && trackableUrl(href.value);
  if (!links.trackClicks || noTrack.length > 0 || !href || !url) return { edits, tracked: 0 };
  const name = html.slice(href.start, href.start + href.name.length);
  edits.push({ start: href.start, end: href.end, text: `${name}="${escapeHtml(links.click(url))}"` });
  return { edits, tracked: 1 };
}

/**
 * The HTML with links rewritten to their tracking URLs and the open pixel before the last
 * `</body>` (at the end when there is none). Links inside comments, <script>, <style> and
 * <textarea> are not links and are left alone; so are links inside conditional comments
 * (`<!--[if mso]>`), which htmlparser2 rightly reads as comments.
 */
export function rewriteHtml(html: string, links: TrackingLinks): { html: string; links: number } {
  const edits: Edit[] = [];
  let tracked = 0;
  let attrs: Attribute[] = [];
  let bodyEnd: number | undefined;
  const parser = new Parser(
    {
      onopentagname() {
        attrs = [];
      },
      onattribute(name, value) {
        // During onattribute the parser's indices span the attribute: [startIndex, endIndex).
        attrs.push({ name, value, start: parser.startIndex, end: parser.endIndex });
      },
      onopentag(name) {
        if (LINK_TAGS.has(name)) {
          const found = linkEdits(html, attrs, links);
          edits.push(...found.edits);
          tracked += found.tracked;
        }
        attrs = [];
      },
      onclosetag(name, isImplied) {
        // startIndex is the `<` of an explicit `</body>`; implied closes have no source.
        if (name === 'body' && !isImplied) bodyEnd = parser.startIndex;
      },
    },
    { decodeEntities: true, lowerCaseTags: true, lowerCaseAttributeNames: true },
  );
  parser.end(html);
  if (links.pixel) {
    const at = bodyEnd ?? html.length;
    edits.push({ start: at, end: at, text: pixelTag(links.pixel) });
  }
  return { html: splice(html, edits), links: tracked };
}

function splice(html: string, edits: Edit[]): string {
  if (edits.length === 0) return html;
  edits.sort((a, b) => a.start - b.start);
  let out = '';
  let at = 0;
  for (const e of edits) {
    out += html.slice(at, e.start) + e.text;
    at = e.end;
  }
  return out + html.slice(at);
}

export function track(publicUrl: string, tokens: TrackingTokens) {
  return function trackStage(sub: Submission): Submission {
    const tenant = sub.principal!.tenant;
    sub.trackOpens ??= tenant.track_opens;
    sub.trackClicks ??= tenant.track_clicks;
    const html = sub.html ?? '';
    // Untracked mail is left untouched, unless it carries our opt-out attribute, which is ours
    // to remove wherever it appears in a link.
    if (!sub.trackOpens && !sub.trackClicks && !NO_TRACK_ANY_CASE.test(html)) return sub;
    // Tokens name the message, so its id is chosen here; store() takes the same one.
    const id = (sub.id ??= uuidv7());
    const out = rewriteHtml(html, {
      trackClicks: sub.trackClicks,
      pixel: sub.trackOpens ? `${publicUrl}/t/o/${tokens.open(id)}.gif` : undefined,
      click: (url) => `${publicUrl}/t/c/${tokens.click(id, url)}`,
    });
    sub.html = out.html;
    const done = [sub.trackOpens ? 'open pixel' : '', sub.trackClicks ? `${out.links} link(s)` : ''].filter(Boolean);
    if (done.length) sub.verdicts.push({ rule: 'tracking', action: 'rewritten', detail: done.join('; ') });
    return sub;
  };
}
