/** The listeners of managed certificates' events (metrics, alerts); a failing listener is logged, never fatal. */
import { errorMessage } from '../../errors';
import type { Logger } from '../../observe/log';
import type { CertificateEvent, CertificateListener } from '../source';

export class CertificateEvents {
  private readonly listeners = new Set<CertificateListener>();

  constructor(private readonly log: Logger) {}

  /** Returns the unsubscribe. */
  on(listener: CertificateListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(event: CertificateEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.log.error({ event: event.type, err: errorMessage(err) }, 'a certificate event listener failed');
      }
    }
  }
}
