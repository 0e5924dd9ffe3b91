// Runs INSIDE the V8 isolate (see runtime.js). Filters for transactional mail beyond Nunjucks'
// own (`default`/`d`, `escape`, `join`, `upper`, …): dates in a time zone, numbers, money.
// Intl (with full ICU data) exists in the isolate, so formatting follows the locale asked for.
//
//   {{ order.placed_at | date }}                               Nov 21, 2026, 9:30 AM (UTC)
//   {{ order.placed_at | date("long", "Europe/Berlin", "de-DE") }}
//   {{ order.placed_at | date("YYYY-MM-DD HH:mm", "America/New_York") }}
//   {{ 1234.5 | number(2) }}                                   1,234.50
//   {{ 1234.5 | currency("EUR", "de-DE") }}                    1.234,50 €
(function installFilters() {
  'use strict';

  const STYLES = new Set(['full', 'long', 'medium', 'short']);
  const DEFAULT_LOCALE = 'en-US';
  // Formatters are costly to build and templates repeat the same few: built (and their options
  // checked) once per distinct arguments, then only looked up. Bounded.
  const formatters = new Map();

  function formatter(what, id, make) {
    let f = formatters.get(id);
    if (f === undefined) {
      try {
        f = make();
      } catch (err) {
        // Intl answers bad options with RangeError: "Invalid time zone specified: Mars/Base".
        throw new Error(`${what}: ${err && err.message ? err.message : String(err)}`);
      }
      if (formatters.size >= 256) formatters.clear();
      formatters.set(id, f);
    }
    return f;
  }

  // A number (or a string of digits) is time since the epoch, as APIs send it: seconds below
  // 10^11 (that is, until the year 5138), milliseconds above.
  const epoch = (n) => new Date(Math.abs(n) < 1e11 ? n * 1000 : n);

  function toDate(value) {
    if (value instanceof Date) return value;
    if (typeof value === 'number') return epoch(value);
    if (typeof value === 'string' && value.trim() !== '') {
      if (/^\d+$/.test(value.trim())) return epoch(Number(value));
      return new Date(value);
    }
    return new Date(NaN);
  }

  // Tokens, longest first: YYYY YY MMMM MMM MM M DD D dddd ddd HH H hh h mm ss A, [literal]
  const TOKENS = /YYYY|YY|MMMM|MMM|MM|M|DD|D|dddd|ddd|HH|H|hh|h|mm|ss|A|\[[^\]]*\]/g;

  function pattern(date, format, timeZone, locale) {
    const numeric = formatter('date', `n|${timeZone}`, () => new Intl.DateTimeFormat('en-US', {
      timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric',
    }));
    const parts = {};
    for (const p of numeric.formatToParts(date)) parts[p.type] = p.value;
    const name = (field, width) => formatter('date', `${field}|${width}|${locale}|${timeZone}`, () => new Intl.DateTimeFormat(locale, { timeZone, [field]: width })).format(date);
    const pad = (v) => String(v).padStart(2, '0');
    const hour = Number(parts.hour) % 24;
    return format.replace(TOKENS, (t) => {
      switch (t) {
        case 'YYYY': return parts.year;
        case 'YY': return parts.year.slice(-2);
        case 'MMMM': return name('month', 'long');
        case 'MMM': return name('month', 'short');
        case 'MM': return pad(parts.month);
        case 'M': return String(Number(parts.month));
        case 'DD': return pad(parts.day);
        case 'D': return String(Number(parts.day));
        case 'dddd': return name('weekday', 'long');
        case 'ddd': return name('weekday', 'short');
        case 'HH': return pad(hour);
        case 'H': return String(hour);
        case 'hh': return pad(hour % 12 || 12);
        case 'h': return String(hour % 12 || 12);
        case 'mm': return pad(parts.minute);
        case 'ss': return pad(parts.second);
        case 'A': return hour < 12 ? 'AM' : 'PM';
        default: return t.slice(1, -1);
      }
    });
  }

  // A missing value renders empty, like a missing variable; a present but unusable one is an
  // error, so a wrong date or amount is never sent.
  const missing = (value) => value === undefined || value === null;
  const text = (value, fallback) => (missing(value) ? fallback : String(value));

  function date(value, format, timeZone, locale) {
    if (missing(value)) return '';
    const d = toDate(value);
    if (Number.isNaN(d.getTime())) throw new Error(`date: ${JSON.stringify(String(value))} is not a date`);
    const f = text(format, 'medium');
    const tz = text(timeZone, 'UTC');
    const loc = text(locale, DEFAULT_LOCALE);
    if (f === 'iso') return d.toISOString();
    if (f.length > 200) throw new Error('date: the format is longer than 200 characters');
    if (STYLES.has(f)) {
      return formatter('date', `s|${f}|${loc}|${tz}`, () => new Intl.DateTimeFormat(loc, { timeZone: tz, dateStyle: f, timeStyle: 'short' })).format(d);
    }
    const dash = f.indexOf('-');
    const kind = f.slice(0, dash);
    const style = f.slice(dash + 1);
    if (dash > 0 && (kind === 'date' || kind === 'time') && STYLES.has(style)) {
      return formatter('date', `${kind}|${style}|${loc}|${tz}`, () => new Intl.DateTimeFormat(loc, { timeZone: tz, [`${kind}Style`]: style })).format(d);
    }
    return pattern(d, f, tz, loc);
  }

  function toNumber(what, value) {
    if (typeof value === 'number' && !Number.isNaN(value)) return value;
    const n = Number(String(value).trim());
    if (String(value).trim() === '' || Number.isNaN(n)) throw new Error(`${what}: ${JSON.stringify(String(value))} is not a number`);
    return n;
  }

  /** Inside formatter(), which names the filter in the message. */
  function digits(value) {
    if (missing(value)) return undefined;
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0 || n > 20) throw new Error('decimals must be a whole number from 0 to 20');
    return n;
  }

  // A column of amounts calls a filter with the same arguments over and over: the formatter used
  // last is kept at hand (looking it up by key means building the key string every time). Only
  // for primitive arguments, which cannot answer differently the next time they are used.
  const primitive = (v) => v === null || (typeof v !== 'object' && typeof v !== 'function');
  const lastUsed = () => ({ a: undefined, b: undefined, c: undefined, f: null });
  function reuse(last, a, b, c) {
    return last.f !== null && a === last.a && b === last.b && c === last.c ? last.f : null;
  }
  function keep(last, a, b, c, f) {
    if (primitive(a) && primitive(b) && primitive(c)) {
      last.a = a;
      last.b = b;
      last.c = c;
      last.f = f;
    }
    return f;
  }

  const lastNumber = lastUsed();
  function number(value, decimals, locale) {
    if (missing(value)) return '';
    const n = toNumber('number', value);
    const f = reuse(lastNumber, decimals, locale) ?? keep(lastNumber, decimals, locale, undefined, numberFormatter(decimals, locale));
    return f.format(n);
  }

  function numberFormatter(decimals, locale) {
    const loc = text(locale, DEFAULT_LOCALE);
    return formatter('number', `#|${loc}|${decimals}`, () => {
      const d = digits(decimals);
      return new Intl.NumberFormat(loc, d === undefined ? { maximumFractionDigits: 20 } : { minimumFractionDigits: d, maximumFractionDigits: d });
    });
  }

  const lastCurrency = lastUsed();
  function currency(value, code, locale, decimals) {
    if (missing(value)) return '';
    const n = toNumber('currency', value);
    const f = reuse(lastCurrency, code, locale, decimals) ?? keep(lastCurrency, code, locale, decimals, currencyFormatter(code, locale, decimals));
    return f.format(n);
  }

  function currencyFormatter(code, locale, decimals) {
    const c = text(code, 'USD');
    const loc = text(locale, DEFAULT_LOCALE);
    return formatter('currency', `$|${loc}|${c}|${decimals}`, () => {
      const upper = c.toUpperCase();
      if (!/^[A-Z]{3}$/.test(upper)) throw new Error(`${JSON.stringify(c)} is not a currency code (ISO 4217, e.g. "EUR")`);
      const d = digits(decimals);
      return new Intl.NumberFormat(loc, { style: 'currency', currency: upper, ...(d === undefined ? {} : { minimumFractionDigits: d, maximumFractionDigits: d }) });
    });
  }

  return { date, number, currency };
});
