/**
 * TLS session ticket keys, made by the control plane and given to every data-plane worker, so a
 * client's session ticket is accepted whichever worker its next connection reaches (each worker
 * would otherwise make keys of its own and refuse the others' tickets). New keys every 12 hours
 * bound what a stolen key could decrypt; tickets issued under the old keys then fall back to a
 * full handshake. The keys live in memory only.
 */
import { randomBytes } from 'node:crypto';
import type { ControlToData, Send } from '../plane/messages';
import type { Clock } from './clock';

export const TICKET_KEY_LIFETIME_MS = 12 * 60 * 60 * 1000;
/** Node's setTicketKeys takes 48 bytes: name, HMAC secret and AES key. */
const TICKET_KEY_BYTES = 48;

/** Sends fresh keys now (before any listener binds) and every `lifetimeMs`; returns the stop function. */
export function rotateTicketKeys(send: Send<ControlToData>, clock: Clock, lifetimeMs = TICKET_KEY_LIFETIME_MS): () => void {
  const next = (): void => {
    send({ type: 'ticket-keys', keys: randomBytes(TICKET_KEY_BYTES).toString('base64') });
    timer = clock.setTimer(next, lifetimeMs);
  };
  let timer: ReturnType<Clock['setTimer']> | null = null;
  next();
  return () => timer?.cancel();
}
