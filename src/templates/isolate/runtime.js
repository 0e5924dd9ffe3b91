// Runs INSIDE the V8 isolate (isolated-vm), never in Node: no require, no process, no I/O.
// Evaluated once per isolate after Nunjucks' browser build, as an expression called with the
// `nunjucks` object, the limits, and the filter factory (filters.js). It returns the three entry
// points the host calls; nothing of ours stays reachable from the global object.
//
// The isolate is the sandbox. What follows is defence in depth, so that a template that finds a
// hole in Nunjucks still cannot run code: member lookups refuse the names that lead to
// constructors and prototypes, the Function constructors are unreachable, `range()` is capped,
// and template names resolve only through the map the host passes for the tenant being rendered.
(function setup(nunjucks, limits, installFilters) {
  'use strict';

  // Kept privately before the globals are removed below: the compiled templates are turned into
  // functions with it.
  const makeFunction = Function;
  const runtime = nunjucks.runtime;
  const lib = nunjucks.lib;
  const Compiler = nunjucks.compiler.Compiler;
  const Literal = nunjucks.nodes.Literal;

  const DENIED = new Set([
    'constructor', 'prototype', '__proto__',
    '__defineGetter__', '__defineSetter__', '__lookupGetter__', '__lookupSetter__',
  ]);

  function denied(name) {
    return new Error(`access to "${name}" is not allowed in templates`);
  }

  // `obj[key]` with a key computed by the template: coerce it to a primitive once, so a key whose
  // toString answers differently on each call (a cycler behind a macro) cannot pass the check
  // with one name and be looked up with another.
  runtime.memberLookup = function memberLookup(obj, val) {
    const key = typeof val === 'number' ? val : String(val);
    if (typeof key === 'string' && DENIED.has(key)) throw denied(key);
    if (obj === undefined || obj === null) return undefined;
    const member = obj[key];
    if (typeof member === 'function') {
      return function boundMember(...args) {
        return member.apply(obj, args);
      };
    }
    return member;
  };

  // `obj.name` and `obj[0]` with the key written in the template: checked once, when compiling
  // (compileLookupVal below), so the render does not check it again for every lookup.
  runtime.checkedMemberLookup = function checkedMemberLookup(obj, key) {
    if (obj === undefined || obj === null) return undefined;
    const member = obj[key];
    if (typeof member === 'function') {
      return function boundMember(...args) {
        return member.apply(obj, args);
      };
    }
    return member;
  };

  const contextOrFrameLookup = runtime.contextOrFrameLookup;
  runtime.contextOrFrameLookup = function lookup(context, frame, name) {
    if (DENIED.has(name)) throw denied(name);
    return contextOrFrameLookup(context, frame, name);
  };

  // The compiled code counts lines from 0 and Nunjucks then drops line 0 ("line 1") from its
  // messages; report lines and columns from 1, as the parser does.
  runtime.handleError = function handleError(error, lineno, colno) {
    if (error && error.lineno) return error;
    return new lib.TemplateError(error, lineno + 1, colno + 1);
  };

  // Dependencies must be literal names: the host resolves them before rendering (and refuses
  // paths at save time), and no name computed from variables can reach another template.
  let dependencies = [];
  for (const method of ['compileExtends', 'compileInclude', 'compileImport', 'compileFromImport']) {
    const original = Compiler.prototype[method];
    Compiler.prototype[method] = function literalTemplateName(node, frame) {
      const name = node.template;
      if (!(name instanceof Literal) || typeof name.value !== 'string') {
        throw new lib.TemplateError('template names in extends, include and import must be quoted strings', node.lineno + 1, node.colno + 1);
      }
      dependencies.push({ name: name.value, line: node.lineno + 1 });
      return original.call(this, node, frame);
    };
  }

  // The parser takes the line of its next token, and has none when the source ends too early:
  // then it is where the lexer stopped.
  const parserError = nunjucks.parser.Parser.prototype.error;
  nunjucks.parser.Parser.prototype.error = function errorWithLine(msg, lineno, colno) {
    const err = parserError.call(this, msg, lineno, colno);
    if (!err.lineno && this.tokens) {
      err.lineno = this.tokens.lineno + 1;
      err.colno = this.tokens.colno + 1;
    }
    return err;
  };

  // Nunjucks updates the line it reports only at function calls; filters and member lookups
  // (where bad input and denied names are found) record theirs too.
  const compileFilter = Compiler.prototype.compileFilter;
  Compiler.prototype.compileFilter = function withLine(node, frame) {
    this._emit(`(lineno = ${Number(node.lineno)}, colno = ${Number(node.colno)}, `);
    compileFilter.call(this, node, frame);
    this._emit(')');
  };
  // A key written in the template (`order.items`, `items[0]`) that is not denied needs no check
  // at render time; any other key (computed, or denied, which then fails with its line) goes
  // through memberLookup's.
  Compiler.prototype.compileLookupVal = function compileLookupVal(node, frame) {
    const key = node.val;
    const checked = key instanceof Literal && (typeof key.value === 'number' || (typeof key.value === 'string' && !DENIED.has(key.value)));
    this._emit(`(lineno = ${Number(node.lineno)}, colno = ${Number(node.colno)}, runtime.${checked ? 'checkedMemberLookup' : 'memberLookup'}((`);
    this._compileExpression(node.target, frame);
    this._emit('),');
    this._compileExpression(key, frame);
    this._emit('))');
  };

  // Autoescape, as Nunjucks' lib.escape (the same characters and entities), without its regular
  // expression with a callback per character: most values need nothing, the rest a few.
  const NEEDS_ESCAPE = /[&"'<>\\]/;
  lib.escape = function escape(val) {
    if (!NEEDS_ESCAPE.test(val)) return val;
    let out = '';
    let from = 0;
    for (let i = 0; i < val.length; i++) {
      let entity;
      switch (val.charCodeAt(i)) {
        case 38: entity = '&amp;'; break;
        case 34: entity = '&quot;'; break;
        case 39: entity = '&#39;'; break;
        case 60: entity = '&lt;'; break;
        case 62: entity = '&gt;'; break;
        case 92: entity = '&#92;'; break;
        default: continue;
      }
      out += val.slice(from, i) + entity;
      from = i + 1;
    }
    return out + val.slice(from);
  };

  // The loop variable as one object per iteration instead of seven Frame.set calls into it.
  Compiler.prototype._emitLoopBindings = function loopBindings(node, arr, i, len) {
    this._emitLine(
      `frame.set("loop", { index: ${i} + 1, index0: ${i}, revindex: ${len} - ${i}, revindex0: ${len} - ${i} - 1, first: ${i} === 0, last: ${i} === ${len} - 1, length: ${len} });`,
    );
  };

  // Frame.set splits every name on dots, at least twice per loop iteration ("item", "loop");
  // the same few names come back, so remember their parts. Otherwise as in Nunjucks.
  const Frame = runtime.Frame;
  const nameParts = new Map();
  Frame.prototype.set = function set(name, val, resolveUp) {
    let parts = nameParts.get(name);
    if (parts === undefined) {
      parts = name.split('.');
      if (nameParts.size < 10000) nameParts.set(name, parts);
    }
    let obj = this.variables;
    if (resolveUp) {
      const frame = this.resolve(parts[0], true);
      if (frame) {
        frame.set(name, val);
        return;
      }
    }
    for (let i = 0; i < parts.length - 1; i++) {
      const id = parts[i];
      if (!obj[id]) obj[id] = {};
      obj = obj[id];
    }
    obj[parts[parts.length - 1]] = val;
  };

  // HTML is escaped; the subject is a header, not HTML, so it is not.
  const htmlEnv = new nunjucks.Environment([], { autoescape: true, dev: true });
  const textEnv = new nunjucks.Environment([], { autoescape: false, dev: true });

  const range = htmlEnv.globals.range;
  function cappedRange(start, stop, step) {
    let a = Number(start);
    let b = Number(stop);
    let s = Number(step);
    if (stop === undefined) {
      b = a;
      a = 0;
      s = 1;
    } else if (!s) {
      s = 1;
    }
    if (!Number.isFinite(a) || !Number.isFinite(b) || !Number.isFinite(s)) throw new Error('range() takes finite numbers');
    const count = Math.max(0, Math.ceil((b - a) / s));
    if (count > limits.maxRange) throw new Error(`range() is limited to ${limits.maxRange} items (asked for ${count})`);
    return range(a, b, s);
  }

  const filters = installFilters();
  for (const env of [htmlEnv, textEnv]) {
    env.addGlobal('range', cappedRange);
    for (const [name, fn] of Object.entries(filters)) env.addFilter(name, fn);
  }

  /** key → { props, html?: Template, text?: Template }, filled by compile and define. */
  const templates = new Map();
  /** The tenant's name → key map for the render in progress; renders run one at a time. */
  let names = Object.create(null);
  let currentEnv = htmlEnv;

  function templateFor(key, env) {
    const entry = templates.get(key);
    if (!entry) return undefined;
    const slot = env === htmlEnv ? 'html' : 'text';
    if (!entry[slot]) entry[slot] = new nunjucks.Template({ type: 'code', obj: entry.props }, env, key, true);
    return entry[slot];
  }

  const EMPTY = { root: (env, context, frame, rt, cb) => cb(null, '') };

  // Templates that include, import or extend each other in a circle would recurse until memory
  // or time runs out; stop them early and say why. Includes and imports nest through
  // Template.render and getExported, extends through getTemplate.
  const MAX_NESTING = 50;
  const MAX_LOADS = 10000;
  let nesting = 0;
  let loads = 0;
  for (const method of ['render', 'getExported']) {
    const original = nunjucks.Template.prototype[method];
    nunjucks.Template.prototype[method] = function nested(ctx, parentFrame, cb) {
      if (nesting >= MAX_NESTING) throw new Error(`templates nest deeper than ${MAX_NESTING} levels (does a template include or import itself?)`);
      nesting++;
      try {
        return original.call(this, ctx, parentFrame, cb);
      } finally {
        nesting--;
      }
    };
  }

  // Replaces the loader machinery: names resolve only through the host's map.
  function getTemplate(name, eagerCompile, parentName, ignoreMissing, cb) {
    if (++loads > MAX_LOADS) {
      const err = new Error(`a render may use templates at most ${MAX_LOADS} times (does a template extend itself?)`);
      if (cb) return cb(err);
      throw err;
    }
    const key = typeof name === 'string' && Object.prototype.hasOwnProperty.call(names, name) ? names[name] : undefined;
    const tmpl = key === undefined ? undefined : templateFor(key, currentEnv);
    let err = null;
    let result = tmpl;
    if (!tmpl) {
      if (ignoreMissing) result = new nunjucks.Template({ type: 'code', obj: EMPTY }, currentEnv, 'empty', true);
      else err = new Error(`template "${String(name)}" not found (a template may use this tenant's templates and the built-in layouts/…)`);
    }
    if (cb) return cb(err, result);
    if (err) throw err;
    return result;
  }
  htmlEnv.getTemplate = getTemplate;
  textEnv.getTemplate = getTemplate;

  // Nunjucks prefixes the message once per template the error passes through:
  // "(outer)\n (inner) [Line 3, Column 5]\n  Error: problem". The innermost one is where it
  // happened.
  const PREFIX = /^\(([^()\n]*)\)(?: \[Line (\d+)(?:, Column (\d+))?\])?\n/;
  const NOISE = /^(?:Template render error: |Error: )/;
  function describe(error, fallbackKey) {
    let message = String(error && error.message !== undefined ? error.message : error);
    let key = fallbackKey;
    let line = error && error.lineno ? error.lineno : null;
    let column = error && error.colno ? error.colno : null;
    for (;;) {
      message = message.trimStart();
      const m = PREFIX.exec(message);
      if (m) {
        key = m[1];
        if (m[2]) {
          line = Number(m[2]);
          column = m[3] ? Number(m[3]) : null;
        }
        message = message.slice(m[0].length);
        continue;
      }
      const noise = NOISE.exec(message);
      if (!noise) break;
      message = message.slice(noise[0].length);
    }
    message = message.trim();
    if (/Maximum call stack size exceeded/.test(message)) message = 'too much recursion (maximum call stack size exceeded)';
    return JSON.stringify({ key, line, column, message });
  }

  // Results cross to Node as strings (a primitive needs no structured clone):
  //   "1" + code.length + ":" + code + dependencies JSON    compiled
  //   "1" + subject.length + ":" + subject + html            rendered
  //   "0" + fault JSON                                       failed
  const ok = (first, second) => `1${first.length}:${first}${second}`;

  /** Compiles a source and keeps it loaded. */
  function compile(key, source) {
    dependencies = [];
    try {
      const code = nunjucks.compiler.compile(source, [], [], key, {});
      templates.set(key, { props: makeFunction(code)() });
      return ok(code, JSON.stringify(dependencies));
    } catch (err) {
      return `0${describe(err, key)}`;
    } finally {
      dependencies = [];
    }
  }

  function renderOne(env, key, context) {
    currentEnv = env;
    const tmpl = templateFor(key, env);
    if (!tmpl) throw new Error(`(${key})\n  template is not loaded`);
    return tmpl.render(context);
  }

  /** Renders the subject and HTML templates; a null key leaves that part to the host. */
  function render(subjectKey, htmlKey, templateNames, variables) {
    let key = htmlKey === null ? subjectKey : htmlKey;
    try {
      nesting = 0;
      loads = 0;
      names = templateNames;
      let subject = '';
      let html = '';
      if (subjectKey !== null) {
        key = subjectKey;
        subject = renderOne(textEnv, subjectKey, variables);
      }
      if (htmlKey !== null) {
        key = htmlKey;
        html = renderOne(htmlEnv, htmlKey, variables);
      }
      if (subject.length + html.length > limits.maxOutputChars) {
        return `0${JSON.stringify({ key, line: null, column: null, message: `the rendered message is larger than the limit of ${limits.maxOutputChars} characters` })}`;
      }
      return ok(subject, html);
    } catch (err) {
      return `0${describe(err, key)}`;
    } finally {
      names = Object.create(null);
    }
  }

  // Renders go to the isolate in batches: one call (one hand-over to the isolate's thread and
  // back, which costs about as much as a render) for all the renders waiting for this isolate.
  // The host gives the call its time limit plus `startWithinMs`, and a render is only started
  // within `startWithinMs` of the call's start, so every render gets at least its full limit.
  // When the call is stopped, salvage() tells the host which renders finished (their results)
  // and so which one was running out of time; the rest are sent again.
  const now = Date.now;
  let interrupted = null;

  /**
   * batchJson: { drop: [key], define: [[key, code]], items: [[subjectKey, htmlKey, names, variables]] }.
   * Returns one result per render done, in order; fewer than asked when the time to start more
   * or the output budget ran out.
   */
  function run(batchJson, startWithinMs) {
    const started = now();
    const state = { results: [], ready: false };
    interrupted = state;
    const batch = JSON.parse(batchJson);
    for (const key of batch.drop) templates.delete(key);
    // Code compiled earlier, here or in another isolate of the pool.
    for (const [key, code] of batch.define) templates.set(key, { props: makeFunction(code)() });
    state.ready = true;
    let chars = 0;
    for (const item of batch.items) {
      if (state.results.length > 0 && (chars > limits.maxOutputChars || now() - started > startWithinMs)) break;
      const result = render(item[0], item[1], item[2], item[3]);
      chars += result.length;
      state.results.push(result);
    }
    interrupted = null;
    return state.results;
  }

  /** After a call was stopped: what its batch got done (null if none was running). */
  function salvage() {
    const state = interrupted;
    interrupted = null;
    return state;
  }

  // Nothing below can be reached by a template that keeps to Nunjucks; this is for one that
  // does not. Constructors of every kind of function are the classic way from any function
  // value back to "compile this string".
  const functionKinds = [
    Function,
    Object.getPrototypeOf(async function () {}).constructor,
    Object.getPrototypeOf(function* () {}).constructor,
    Object.getPrototypeOf(async function* () {}).constructor,
  ];
  for (const F of functionKinds) {
    Object.defineProperty(F.prototype, 'constructor', { value: undefined, writable: false, configurable: false });
  }
  for (const name of ['Function', 'eval', 'console', 'WebAssembly', 'SharedArrayBuffer', 'Atomics', 'nunjucks']) {
    delete globalThis[name];
  }
  Object.freeze(runtime);
  Object.freeze(lib);
  Object.freeze(htmlEnv.globals);
  Object.freeze(textEnv.globals);
  Object.freeze(htmlEnv.filters);
  Object.freeze(textEnv.filters);

  return { compile, run, salvage };
});
