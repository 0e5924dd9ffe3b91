// Building the page from data without innerHTML: every string becomes a text node, so a subject,
// a tag or an upstream reply can never become markup (they are all chosen by senders).

/**
 * An element: h('a', {href: '#/tags', class: 'x', onclick: fn}, 'text', child, [more]).
 * Attributes named on… become listeners; false, null and undefined attributes and children are
 * left out, so conditional parts read as `cond && h(…)`.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (name === 'value' || name === 'checked' || name === 'selected' || name === 'srcdoc') el[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === false || child === null || child === undefined) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces everything inside `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** A command line or JSON body to copy, in a block with a Copy button. */
export function codeBlock(text) {
  const button = h('button', { type: 'button', class: 'copy', title: 'Copy to the clipboard' }, 'Copy');
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Select and copy';
    }
    setTimeout(() => (button.textContent = 'Copy'), 2000);
  });
  return h('div', { class: 'code' }, h('pre', {}, text), button);
}

/** An empty state: what is missing, and what to do about it. */
export function emptyState(title, ...body) {
  return h('div', { class: 'empty', role: 'status' }, h('h3', {}, title), ...body);
}

export function loading(what = 'Loading') {
  return h('div', { class: 'loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), `${what}…`);
}
