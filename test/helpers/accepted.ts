// An AcceptedMessage (what the pipeline hands commitMessage) for tests that store messages
// without sending them through SMTP: a small valid MIME, the route's tenant, nothing captured.
import { uuidv7 } from '../../src/crypto.ts';
import type { AcceptedMessage } from '../../src/pipeline/commit.ts';

export function acceptedMessage(route: { id: string; name: string; tenant_id: string }, overrides: Partial<AcceptedMessage> = {}): AcceptedMessage {
  const id = overrides.id ?? uuidv7();
  const subject = overrides.subject ?? 'hi';
  const mime = Buffer.from(`From: a@example.com\r\nTo: b@example.org\r\nSubject: ${subject}\r\nMessage-ID: <${id}@relay.test>\r\n\r\n<p>hello</p>\r\n`);
  return {
    id,
    tenantId: route.tenant_id,
    apiKeyId: null,
    tag: 'untagged',
    routeId: route.id,
    routeName: route.name,
    templateId: null,
    templateName: null,
    testMode: false,
    mailFrom: 'a@example.com',
    fromAddress: 'a@example.com',
    subject,
    messageIdHeader: `<${id}@relay.test>`,
    mime: [mime],
    size: mime.length,
    verdicts: [],
    recipients: ['b@example.org'],
    attachments: [],
    ...overrides,
  };
}
