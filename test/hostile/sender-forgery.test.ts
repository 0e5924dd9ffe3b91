// Sender forgery: a tenant (or a stolen key) tries to send as someone else. The rule (SPEC §2,
// §3): the From address must be in a domain the sending tenant has verified, compared in its
// ASCII lower-case form; anything else is 550 5.7.1, and a From that is not exactly one address
// is 550 5.1.7. What goes out is built from the address that was checked — never from the raw
// header — so the From upstream, and the envelope sender, are exactly what was verified.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { domainToASCII } from 'node:url';
import { simpleParser } from 'mailparser';
import { findMessage } from '../../src/db/messages.repository.ts';
import { addDomain } from '../../src/services/domains.service.ts';
import { addRoute, setupTenant, startTestRelay, type TenantSetup, type TestRelay } from '../helpers/relay.ts';
import { headerFields, openData, queuedId, session } from './raw-smtp.ts';

let relay: TestRelay;
let acme: TenantSetup;

before(async () => {
  relay = await startTestRelay({ TXRELAY_ROLES: 'smtp' });
  acme = await setupTenant(relay.ctx, 'acme', 'acme.example');
  await addDomain(relay.ctx.db, relay.ctx.box, acme.tenantId, { name: 'xn--bcher-kva.example', verified: true });
  await addRoute(relay.ctx, acme.tenantId, { name: 'cap', transport: 'capture' });
  // Another tenant, with its own verified domain.
  await setupTenant(relay.ctx, 'bravo', 'bravo.example');
});

after(async () => relay?.close());

/** A message with these From header line(s), sent with acme's live key; the final reply. */
async function sendFrom(fromLines: string, mailFrom = 'app@acme.example'): Promise<string> {
  const c = await session(relay.smtpPort, acme.key);
  await openData(c, mailFrom);
  c.write(Buffer.from(`${fromLines}\r\nTo: user@dest.example\r\nSubject: s\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n.\r\n`, 'utf8'));
  const reply = await c.reply(30_000);
  c.close();
  return reply;
}

/** The accepted message as it goes out: its From header (parsed) and its envelope sender. */
async function outgoing(reply: string) {
  const msg = await findMessage(relay.ctx.db, queuedId(reply));
  const mail = await simpleParser(msg!.mime);
  const from = mail.from!.value;
  assert.equal(from.length, 1, 'exactly one From mailbox goes out');
  const fields = headerFields(msg!.mime).filter(([name]) => name === 'from');
  assert.equal(fields.length, 1, 'one From header goes out');
  // The address as written (mailparser would show punycode as Unicode), the name as decoded.
  const address = /<([^<>]+)>$/.exec(fields[0][1])?.[1] ?? fields[0][1];
  return { address, name: from[0].name, mailFrom: msg!.mail_from, mime: msg!.mime };
}

const b64 = (s: string) => Buffer.from(s).toString('base64');
const NOT_VERIFIED = (domain: string) => new RegExp(`^550 5\\.7\\.1 Sender domain ${domain.replace(/\./g, '\\.')} is not verified for this tenant`);

describe('several senders in one message', () => {
  test('two From headers: 550 5.1.7', async () => {
    assert.match(await sendFrom('From: app@acme.example\r\nFrom: ceo@bravo.example'), /^550 5\.1\.7 From must hold exactly one address/);
    assert.match(await sendFrom('From: ceo@bravo.example\r\nFrom: app@acme.example'), /^550 5\.1\.7 /);
  });

  test('group syntax: the mailboxes inside count; none, or more than one, is 550 5.1.7', async () => {
    assert.match(await sendFrom('From: Team: app@acme.example, ceo@bravo.example;'), /^550 5\.1\.7 /);
    assert.match(await sendFrom('From: undisclosed-recipients:;'), /^550 5\.1\.7 /);
    assert.match(await sendFrom('From: Team: ceo@bravo.example;'), NOT_VERIFIED('bravo.example'));
    // A group named like an address is only a name.
    assert.match(await sendFrom('From: app@acme.example: ceo@bravo.example;'), NOT_VERIFIED('bravo.example'));
    // One verified mailbox in a group goes out as that mailbox (RFC 5322 §3.6.2 allows no group in From).
    const out = await outgoing(await sendFrom('From: Team: app@acme.example;'));
    assert.equal(out.address, 'app@acme.example');
    assert.ok(!/^From:.*:;/im.test(out.mime.toString()), 'no group syntax goes out');
  });
});

describe('an address where the name should be', () => {
  test("another domain's address in the display name: the real address decides", async () => {
    assert.match(await sendFrom('From: "app@acme.example" <ceo@bravo.example>'), NOT_VERIFIED('bravo.example'));
    assert.match(await sendFrom('From: app@acme.example <ceo@bravo.example>'), NOT_VERIFIED('bravo.example'));
    const out = await outgoing(await sendFrom('From: "ceo@bravo.example" <app@acme.example>'));
    assert.equal(out.address, 'app@acme.example');
    assert.equal(out.mailFrom, 'app@acme.example');
  });

  test('an encoded-word that decodes to an address is a name, never the address', async () => {
    const out = await outgoing(await sendFrom(`From: =?UTF-8?B?${b64('ceo@bravo.example')}?= <app@acme.example>`));
    assert.equal(out.address, 'app@acme.example');
    assert.equal(out.name, 'ceo@bravo.example');
    const angled = await outgoing(await sendFrom(`From: =?UTF-8?B?${b64('CEO <ceo@bravo.example>')}?= <app@acme.example>`));
    assert.equal(angled.address, 'app@acme.example');
    // Alone, an encoded-word holds no address at all.
    assert.match(await sendFrom(`From: =?UTF-8?B?${b64('app@acme.example')}?=`), /^550 5\.1\.7 /);
    assert.match(await sendFrom(`From: =?UTF-8?B?${b64('ceo@bravo.example')}?=`), /^550 5\.1\.7 /);
  });
});

describe('domain variants', () => {
  test("another tenant's verified domain: 550 5.7.1", async () => {
    assert.match(await sendFrom('From: ceo@bravo.example'), NOT_VERIFIED('bravo.example'));
    assert.match(await sendFrom('From: ceo@BRAVO.example'), NOT_VERIFIED('bravo.example'));
  });

  test('look-alikes of a verified domain: 550 5.7.1', async () => {
    for (const domain of ['sub.acme.example', 'evilacme.example', 'acme.example.bravo.example', 'acme.examp1e']) {
      assert.match(await sendFrom(`From: app@${domain}`), NOT_VERIFIED(domain), domain);
    }
    // A Cyrillic "а" (U+0430) is another domain, compared as its punycode.
    assert.match(await sendFrom('From: app@\u0430cme.example'), NOT_VERIFIED(domainToASCII('\u0430cme.example')));
  });

  test('case, IDN, punycode, full-width and trailing-dot spellings of a verified domain go out as the checked ASCII form', async () => {
    const spellings: [string, string][] = [
      ['app@ACME.Example', 'app@acme.example'],
      ['app@acme.example.', 'app@acme.example'],
      // Full-width letters map to ASCII under IDNA (UTS #46): the same domain, and it must go
      // out as that domain, not as punycode of the full-width form.
      ['app@\uff41\uff43\uff4d\uff45.example', 'app@acme.example'],
      ['app@bücher.example', 'app@xn--bcher-kva.example'],
      ['app@xn--bcher-kva.example', 'app@xn--bcher-kva.example'],
      ['app@XN--BCHER-KVA.example', 'app@xn--bcher-kva.example'],
    ];
    for (const [from, expected] of spellings) {
      const out = await outgoing(await sendFrom(`From: App <${from}>`));
      assert.equal(out.address, expected, from);
      assert.equal(out.mailFrom, expected, `${from}: envelope sender`);
    }
  });
});

describe('other places a sender can hide', () => {
  test('a forged envelope sender (MAIL FROM) is replaced by the verified From', async () => {
    const out = await outgoing(await sendFrom('From: app@acme.example', 'ceo@bravo.example'));
    assert.equal(out.mailFrom, 'app@acme.example');
  });

  test('Sender, Return-Path and Resent-From headers are dropped, never delivered', async () => {
    const out = await outgoing(await sendFrom('From: app@acme.example\r\nSender: ceo@bravo.example\r\nReturn-Path: <ceo@bravo.example>\r\nResent-From: ceo@bravo.example'));
    assert.ok(!out.mime.toString().includes('bravo.example'), 'no trace of the other domain');
  });
});
