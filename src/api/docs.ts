// /docs: the OpenAPI document as one readable, self-contained HTML page (no scripts, no CDN:
// relays often run where the browser cannot reach the internet).
type Json = Record<string, any>;

const escape = (s: unknown): string =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** `code` spans for the document's backquoted words, everything else escaped. */
const prose = (s: unknown): string => escape(s).replace(/`([^`]+)`/g, '<code>$1</code>');

/** A JSON schema as a compact, indented field list. */
function fields(schema: Json | undefined, depth = 0): string {
  if (!schema) return '';
  const variants = (schema.anyOf ?? schema.oneOf) as Json[] | undefined;
  if (variants) return variants.map((v, i) => `<div class="variant">variant ${i + 1}${fields(v, depth)}</div>`).join('');
  const props = schema.properties as Record<string, Json> | undefined;
  if (!props) return '';
  const required = new Set<string>(schema.required ?? []);
  const rows = Object.entries(props).map(([name, p]) => {
    const item = p.type === 'array' ? (p.items as Json) : undefined;
    const type = typeName(p);
    const nested = depth < 3 ? fields(item ?? p, depth + 1) : '';
    return `<li><code>${escape(name)}</code> <span class="type">${escape(type)}</span>${required.has(name) ? ' <span class="req">required</span>' : ''}${p.description ? ` — ${prose(p.description)}` : ''}${nested}</li>`;
  });
  return `<ul>${rows.join('')}</ul>`;
}

function typeName(p: Json): string {
  if (p.enum) return (p.enum as unknown[]).map((v) => JSON.stringify(v)).join(' | ');
  if (p.const !== undefined) return JSON.stringify(p.const);
  if (p.anyOf) return (p.anyOf as Json[]).map(typeName).join(' | ');
  if (p.type === 'array') return `${typeName((p.items as Json) ?? {})}[]`;
  if (Array.isArray(p.type)) return p.type.join(' | ');
  return [p.type ?? 'any', p.format ? `(${p.format})` : ''].join(' ').trim();
}

export function renderDocs(doc: Json): string {
  const byTag = new Map<string, string[]>();
  for (const [path, methods] of Object.entries(doc.paths as Record<string, Record<string, Json>>)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = (op.tags as string[])[0];
      const params = (op.parameters as Json[] | undefined) ?? [];
      const body = op.requestBody?.content?.['application/json']?.schema as Json | undefined;
      const responses = Object.entries(op.responses as Record<string, Json>)
        .map(([status, r]) => {
          const ref = typeof r.$ref === 'string' ? (r.$ref as string).split('/').pop()! : undefined;
          const resolved = ref ? (doc.components.responses[ref] as Json) : r;
          const schema = resolved.content?.['application/json']?.schema as Json | undefined;
          return `<li><b>${escape(status)}</b> ${prose(resolved.description)}${!ref && schema ? fields(schema.type === 'object' && schema.properties?.items ? schema.properties.items.items : schema) : ''}</li>`;
        })
        .join('');
      const html = `<section class="op" id="${escape(op.operationId)}">
<h3><span class="m ${method}">${method.toUpperCase()}</span> <code>${escape(path)}</code></h3>
<p>${prose(op.summary)}${op.description ? ` ${prose(op.description)}` : ''}</p>
${params.length ? `<h4>Parameters</h4><ul>${params.map((p) => `<li><code>${escape(p.name)}</code> <span class="type">${escape(p.in)}, ${escape(typeName(p.schema ?? {}))}</span>${p.required ? ' <span class="req">required</span>' : ''} — ${prose(p.description)}</li>`).join('')}</ul>` : ''}
${body ? `<h4>Body</h4>${fields(body)}` : ''}
<h4>Answers</h4><ul>${responses}</ul>
</section>`;
      byTag.set(tag, [...(byTag.get(tag) ?? []), html]);
    }
  }
  const toc = [...byTag.keys()].map((t) => `<li><a href="#${escape(encodeURIComponent(t))}">${escape(t)}</a></li>`).join('');
  const sections = [...byTag.entries()].map(([t, ops]) => `<h2 id="${escape(encodeURIComponent(t))}">${escape(t)}</h2>${ops.join('\n')}`).join('\n');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(doc.info.title)} reference</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
code{font:13px ui-monospace,monospace;background:#f3f3f3;padding:1px 4px;border-radius:3px}
.op{border-top:1px solid #ddd;padding:.5em 0}.op h3{margin:.3em 0;font-size:16px}
.m{display:inline-block;min-width:4.5em;font:bold 12px ui-monospace,monospace;color:#fff;padding:2px 6px;border-radius:3px;text-align:center}
.get{background:#2b7bb9}.post{background:#2f9e44}.put{background:#b7791f}.patch{background:#8250df}.delete{background:#c92a2a}
.type{color:#666;font-size:13px}.req{color:#c92a2a;font-size:12px}h4{margin:.5em 0 .2em;font-size:14px}ul{margin:.2em 0}.variant{margin-left:1em;color:#555}
</style></head><body>
<h1>${escape(doc.info.title)} <small>${escape(doc.info.version)}</small></h1>
<p>${prose(doc.info.description)} Machine-readable: <a href="/openapi.json">/openapi.json</a>.</p>
<ul>${toc}</ul>
${sections}
</body></html>`;
}
