/**
 * When to alert, decided without I/O (the clock is a function): pure bookkeeping over what the
 * certificate source reports. Per name:
 *
 * - `renewal-failing` once `afterFailures` attempts in a row have failed — once per incident;
 * - `certificate-expiring` when fewer than N days are left, for each threshold in `daysLeft` once
 *   per certificate serial (thresholds crossed together give one alert, for the smallest). A
 *   threshold of a third of the certificate's lifetime or more is skipped: renewal is only due
 *   then, so short-lived certificates (6-day ones renewed with 2 days left) do not alert routinely;
 * - `recovered` once a new certificate is installed after an incident that was alerted on.
 *
 * Every alert goes through a rate limit: at most one per name and kind per `minIntervalMs`
 * (default 1 h), and at most `maxPerHour` in all (default 20). A suppressed alert is returned with
 * `send: false` and the reason, for the log.
 */
import type { CertificateFacts } from './readiness';

export type AlertEvent = 'renewal-failing' | 'certificate-expiring' | 'recovered';
export type Severity = 'info' | 'warning' | 'critical';

/** One alert, as sent (the generic webhook's JSON body is exactly this). */
export interface Alert {
  readonly event: AlertEvent;
  readonly name: string;
  readonly severity: Severity;
  readonly message: string;
  readonly details: Readonly<Record<string, unknown>>;
  /** ISO 8601. */
  readonly at: string;
}

export interface Decision {
  readonly alert: Alert;
  readonly send: boolean;
  /** Why it is not sent. */
  readonly suppressed?: string;
}

export interface AlertRulesConfig {
  readonly afterFailures: number;
  /** Days-left thresholds. */
  readonly daysLeft: readonly number[];
  /** At most one alert per name and kind this often (default 1 h). */
  readonly minIntervalMs?: number;
  /** At most this many alerts in any hour (default 20). */
  readonly maxPerHour?: number;
}

export interface RenewalFailure {
  readonly name: string;
  /** Failed attempts in a row. */
  readonly failures: number;
  readonly error: string;
  /** Expiry (ms epoch) of the certificate still served, or null when there is none. */
  readonly notAfter: number | null;
}

interface NameState {
  readonly name: string;
  cert: CertificateFacts | null;
  /** Thresholds (days) already alerted (or skipped) for this certificate. */
  fired: Set<number>;
  /** A failure incident is open (its alert was decided). */
  failing: boolean;
  /** Kinds alerted on (sent) since the last recovery: a recovery is owed. */
  alerted: Set<AlertEvent>;
}

const DAY = 86_400_000;
const HOUR = 3_600_000;
const MAX_ERROR_IN_MESSAGE = 300;

/** "3 days", "5 hours", "12 minutes". */
export function timeInWords(ms: number): string {
  const [n, unit] = ms >= 2 * DAY ? [Math.floor(ms / DAY), 'day'] : ms >= HOUR ? [Math.floor(ms / HOUR), 'hour'] : [Math.max(1, Math.floor(ms / 60_000)), 'minute'];
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}

export class AlertRules {
  private readonly states = new Map<string, NameState>();
  private readonly lastSent = new Map<string, number>();
  private sentAt: number[] = [];

  constructor(
    private readonly config: AlertRulesConfig,
    private readonly now: () => number,
  ) {}

  /** A name's attempt failed with every CA. */
  renewalFailed(f: RenewalFailure): Decision[] {
    const s = this.state(f.name);
    if (f.failures < this.config.afterFailures || s.failing) return [];
    s.failing = true;
    const now = this.now();
    const error = f.error.length > MAX_ERROR_IN_MESSAGE ? `${f.error.slice(0, MAX_ERROR_IN_MESSAGE)}…` : f.error;
    const served =
      f.notAfter === null
        ? 'nothing is served for this name yet'
        : f.notAfter <= now
          ? `the certificate still served expired at ${new Date(f.notAfter).toISOString()}`
          : `the certificate still served expires in ${timeInWords(f.notAfter - now)} (${new Date(f.notAfter).toISOString()})`;
    const what = f.notAfter === null ? 'Obtaining' : 'Renewing';
    return [
      this.decide(s, {
        event: 'renewal-failing',
        severity: f.notAfter === null || f.notAfter <= now ? 'critical' : 'warning',
        message: `${what} the certificate for ${f.name} has failed ${f.failures} time${f.failures === 1 ? '' : 's'} in a row; ${served}. Last error: ${error}`,
        details: { failures: f.failures, error: f.error, notAfter: f.notAfter === null ? null : new Date(f.notAfter).toISOString() },
      }),
    ];
  }

  /** A certificate is now served for `name`: a recovery when an incident was alerted, and its expiry checked. */
  certificateInstalled(name: string, cert: CertificateFacts): Decision[] {
    const s = this.state(name);
    if (s.cert?.serial === cert.serial) return [];
    const out: Decision[] = [];
    if (s.alerted.size > 0) {
      out.push(
        this.decide(s, {
          event: 'recovered',
          severity: 'info',
          message: `The certificate for ${name} was replaced; it is valid until ${new Date(cert.notAfter).toISOString()}. Resolved: ${[...s.alerted].join(', ')}.`,
          details: { serial: cert.serial, notAfter: new Date(cert.notAfter).toISOString(), resolved: [...s.alerted] },
        }),
      );
    }
    Object.assign(s, { cert, fired: new Set<number>(), failing: false, alerted: new Set<AlertEvent>() });
    out.push(...this.expiry(s));
    return out;
  }

  /** Thresholds crossed since the last look, for every name. */
  checkExpiry(): Decision[] {
    return [...this.states.values()].flatMap((s) => this.expiry(s));
  }

  /** When the next threshold will be crossed (ms epoch), or null when none is left. */
  nextCheck(): number | null {
    let next: number | null = null;
    for (const s of this.states.values()) {
      for (const days of this.pending(s)) {
        const at = s.cert!.notAfter - days * DAY;
        if (next === null || at < next) next = at;
      }
    }
    return next;
  }

  /** Thresholds that still apply to the name's certificate and have not been crossed. */
  private pending(s: NameState): number[] {
    const c = s.cert;
    if (c === null) return [];
    const third = (c.notAfter - c.notBefore) / 3;
    return this.config.daysLeft.filter((days) => days * DAY < third && !s.fired.has(days));
  }

  private expiry(s: NameState): Decision[] {
    const c = s.cert;
    if (c === null) return [];
    const left = c.notAfter - this.now();
    const crossed = this.pending(s).filter((days) => left <= days * DAY);
    if (crossed.length === 0) return [];
    for (const days of crossed) s.fired.add(days);
    const threshold = Math.min(...crossed);
    const last = this.pending(s).length === 0;
    const notAfter = new Date(c.notAfter).toISOString();
    return [
      this.decide(s, {
        event: 'certificate-expiring',
        severity: left <= 0 || last ? 'critical' : 'warning',
        message:
          left <= 0
            ? `The certificate for ${s.name} expired at ${notAfter} and has not been replaced: clients are refused.`
            : `The certificate for ${s.name} expires in ${timeInWords(left)} (${notAfter}) and has not been renewed yet.`,
        details: { serial: c.serial, notAfter, daysLeft: Math.round((left / DAY) * 10) / 10, threshold },
      }),
    ];
  }

  private decide(s: NameState, alert: Omit<Alert, 'name' | 'at'>): Decision {
    const now = this.now();
    const full: Alert = { ...alert, name: s.name, at: new Date(now).toISOString() };
    const key = `${s.name}\n${alert.event}`;
    const last = this.lastSent.get(key);
    const minInterval = this.config.minIntervalMs ?? HOUR;
    if (last !== undefined && now - last < minInterval) {
      return { alert: full, send: false, suppressed: `one ${alert.event} alert for ${s.name} was sent ${timeInWords(now - last)} ago` };
    }
    this.sentAt = this.sentAt.filter((t) => now - t < HOUR);
    const cap = this.config.maxPerHour ?? 20;
    if (this.sentAt.length >= cap) return { alert: full, send: false, suppressed: `${cap} alerts were sent in the last hour` };
    this.sentAt.push(now);
    this.lastSent.set(key, now);
    if (alert.event !== 'recovered') s.alerted.add(alert.event);
    return { alert: full, send: true };
  }

  private state(name: string): NameState {
    let s = this.states.get(name);
    if (s === undefined) this.states.set(name, (s = { name, cert: null, fired: new Set(), failing: false, alerted: new Set() }));
    return s;
  }
}
