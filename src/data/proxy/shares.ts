/**
 * Each client's share of what all clients share: forwarded requests in flight per client
 * connection and per client address. A request over either share is refused at once (429) instead
 * of waiting behind that client's own stalled or slow requests, so one client — however many
 * streams or connections it opens — cannot take the upstream pool from the others. Trusted proxies
 * carry many clients and are not counted.
 */
export interface ShareLimits {
  readonly perConnection: number;
  readonly perAddress: number;
}

/** What a request holds while in flight; `release()` gives it back (once). */
export interface Share {
  release(): void;
}

const NOTHING: Share = { release: () => undefined };

export type Refusal = 'connection' | 'address';

export class ClientShares {
  private readonly byConnection = new WeakMap<object, number>();
  private readonly byAddress = new Map<string, number>();

  constructor(private limits: ShareLimits) {}

  /** A new plan's limits; requests in flight keep what they hold. */
  setLimits(limits: ShareLimits): void {
    this.limits = limits;
  }

  /**
   * Take one request's share on `connection` (the socket or HTTP/2 session) and `address`, or say
   * which share is used up. Trusted peers take nothing.
   */
  acquire(connection: object, address: string, trusted: boolean): Share | Refusal {
    if (trusted) return NOTHING;
    const onConnection = this.byConnection.get(connection) ?? 0;
    if (onConnection >= this.limits.perConnection) return 'connection';
    const onAddress = this.byAddress.get(address) ?? 0;
    if (onAddress >= this.limits.perAddress) return 'address';
    this.byConnection.set(connection, onConnection + 1);
    this.byAddress.set(address, onAddress + 1);
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        const c = this.byConnection.get(connection)! - 1;
        if (c === 0) this.byConnection.delete(connection);
        else this.byConnection.set(connection, c);
        const a = this.byAddress.get(address)! - 1;
        if (a === 0) this.byAddress.delete(address);
        else this.byAddress.set(address, a);
      },
    };
  }

  /** Addresses holding at least one share (for tests and metrics). */
  get addresses(): number {
    return this.byAddress.size;
  }
}
