// A message's HTML shown safely, and its raw MIME downloaded.
//
// The preview is an <iframe sandbox> with no allow-* at all: no scripts, no same-origin access
// to this page (so no access to the credential in sessionStorage), no forms, no popups, no
// top navigation. It is fed by srcdoc, with a Content-Security-Policy of its own put first in
// the document: nothing may load from the network, so neither remote images nor the open
// tracking pixel are fetched (a preview must never count as an open). <base target="_blank">
// turns every link into a popup, which the sandbox refuses: clicking a tracked link in the
// preview cannot count as a click either.
import { h } from './dom.js';

const PREVIEW_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:";
const GUARD = `<meta http-equiv="Content-Security-Policy" content="${PREVIEW_CSP}"><base target="_blank">`;

/**
 * The document for srcdoc. The guard must come before anything that could load (a policy only
 * governs what follows it), yet after the message's own <!DOCTYPE>, which decides whether the
 * message renders in standards or quirks mode as it would in a mail client.
 */
export function previewDocument(html) {
  const doctype = /^\s*<!doctype[^>]*>/i.exec(html);
  return doctype ? doctype[0] + GUARD + html.slice(doctype[0].length) : GUARD + html;
}

export function previewFrame(html, title) {
  return h('iframe', {
    class: 'preview',
    title: `Preview of ${title || 'the message'}`,
    sandbox: '',
    referrerpolicy: 'no-referrer',
    srcdoc: previewDocument(html),
  });
}

/** The preview, or why there is none. */
export function previewOrNote(preview) {
  if (preview.html === null) return h('p', { class: 'muted' }, 'This message has no HTML part to preview: download the raw MIME to see it.');
  return previewFrame(preview.html, preview.subject);
}

/**
 * "Download raw MIME": the bytes need the bearer header, so a plain link cannot fetch them. The
 * blob URL is revoked once the download has started.
 */
export function mimeButton(api, id, label = 'Download raw MIME (.eml)') {
  const button = h('button', { type: 'button', class: 'secondary', 'data-action': 'download-mime' }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const url = URL.createObjectURL(await api.mime(id));
      const a = h('a', { href: url, download: `${id}.eml`, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      button.after(h('span', { class: 'form-error inline', role: 'alert' }, ` Download failed: ${err.message}`));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
