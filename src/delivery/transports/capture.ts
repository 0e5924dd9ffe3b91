// The capture transport: the final MIME is already stored in messages.mime at acceptance, where
// the dashboard and `GET /admin/messages/:id/mime` show it. Nothing leaves the relay.
import type { DeliveryRequest, DeliveryResult, DeliveryTransport } from './transport.ts';

export const CAPTURED = 'captured';

export class CaptureTransport implements DeliveryTransport {
  async deliver(request: DeliveryRequest): Promise<DeliveryResult> {
    return { recipients: request.recipients.map((address) => ({ address, accepted: true, response: CAPTURED })) };
  }

  async close(): Promise<void> {}
}
