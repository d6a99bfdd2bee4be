/**
 * Alert delivery: the decisions of AlertRules, sent to a generic JSON webhook or posted to a Matrix
 * room. Sending never blocks serving or renewing: alerts go into a bounded queue, one request at a
 * time, each with a timeout; a failed delivery is logged (warn) and retried a few times with
 * growing delays, then given up. Nothing here throws at its callers.
 */
import { randomUUID } from 'node:crypto';
import type { AlertsPlan, AlertTarget } from '../config/plan';
import { httpRequest } from './http-request';
import type { Logger } from './log';
import { AlertRules, type Alert, type AlertRulesConfig, type Decision, type RenewalFailure } from './alert-rules';
import type { CertificateFacts } from './readiness';

/** The part of the control plane's Clock used here (timers that tests can move). */
export interface TimerClock {
  now(): number;
  setTimer(fn: () => void, ms: number): { cancel(): void };
}

/** One HTTP request that delivers an alert. */
interface Delivery {
  readonly url: string;
  readonly method: 'POST' | 'PUT';
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Turns an alert into its request; `id` is the same for every retry of one alert. */
export type AlertTransport = (alert: Alert, id: string) => Delivery;

/** POST {event, name, severity, message, details, at} as JSON. */
export function genericWebhook(url: string): AlertTransport {
  return (alert) => ({ url, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(alert) });
}

/**
 * An `m.notice` message in a room, through the client-server API:
 * `PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}` with a Bearer token. The
 * transaction ID stays the same across retries, so the homeserver posts a retried alert once.
 */
export function matrixRoom(homeserver: string, roomId: string, accessToken: string): AlertTransport {
  return (alert, id) => ({
    url: `${homeserver}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${encodeURIComponent(id)}`,
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${accessToken}` },
    body: JSON.stringify({ msgtype: 'm.notice', body: `[matrix-edge ${alert.severity}] ${alert.message}` }),
  });
}

/** The transport a plan asks for; `accessToken` is the matrix format's token (read from its file by the caller). */
export function transportFor(target: AlertTarget, accessToken: string | null): AlertTransport {
  if (target.format === 'generic') return genericWebhook(target.url);
  if (accessToken === null) throw new Error('alerts: format matrix needs an access token');
  return matrixRoom(target.homeserver, target.roomId, accessToken);
}

export interface SenderOptions {
  /** Longest wait for one delivery (default 10 s). */
  readonly timeoutMs?: number;
  /** Retries after a failed delivery (default 3), after retryBaseMs, ×4 each time. */
  readonly retries?: number;
  /** Default 5 s. */
  readonly retryBaseMs?: number;
  /** Alerts waiting beyond this many are dropped (default 50). */
  readonly queueSize?: number;
}

interface Queued {
  readonly alert: Alert;
  readonly id: string;
  failures: number;
}

export class AlertSender {
  private readonly queue: Queued[] = [];
  private busy = false;
  private retryTimer: { cancel(): void } | null = null;
  private stopped = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly transport: AlertTransport,
    private readonly log: Logger,
    private readonly clock: TimerClock,
    private readonly options: SenderOptions = {},
  ) {}

  /** Queue an alert; returns at once. */
  send(alert: Alert): void {
    if (this.stopped) return;
    if (this.queue.length >= (this.options.queueSize ?? 50)) {
      this.log.warn({ alert: alert.event, name: alert.name }, 'alert dropped: too many alerts are waiting to be delivered');
      return;
    }
    this.queue.push({ alert, id: randomUUID(), failures: 0 });
    this.pump();
  }

  /** Resolves once nothing is queued or being delivered. */
  idle(): Promise<void> {
    if (!this.busy && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops delivering; what is still queued is dropped (and logged). */
  stop(): void {
    this.stopped = true;
    this.busy = false;
    this.retryTimer?.cancel();
    if (this.queue.length > 0) this.log.warn({ dropped: this.queue.length }, 'stopping: undelivered alerts dropped');
    this.queue.length = 0;
    this.settle();
  }

  private pump(): void {
    const item = this.queue[0];
    if (this.busy || this.stopped || item === undefined) return this.settle();
    this.busy = true;
    void this.deliver(item).then((retryIn) => {
      if (this.stopped) return;
      if (retryIn === null) {
        this.queue.shift();
        this.busy = false;
        this.pump();
      } else {
        this.retryTimer = this.clock.setTimer(() => {
          this.busy = false;
          this.pump();
        }, retryIn);
      }
    });
  }

  /** One try; resolves with the delay before the next try, or null when done (delivered or given up). */
  private async deliver(item: Queued): Promise<number | null> {
    const { alert } = item;
    const request = this.transport(alert, item.id);
    let problem: string;
    let retryable = true;
    try {
      const answer = await httpRequest(request.url, { ...request, timeoutMs: this.options.timeoutMs ?? 10_000 });
      if (answer.status >= 200 && answer.status < 300) {
        this.log.info({ alert: alert.event, name: alert.name, status: answer.status }, 'alert delivered');
        return null;
      }
      problem = `HTTP ${answer.status}: ${answer.body.slice(0, 300)}`;
      retryable = answer.status === 429 || answer.status >= 500;
    } catch (err) {
      problem = String((err as { message?: unknown } | null)?.message ?? err);
    }
    item.failures += 1;
    const retries = this.options.retries ?? 3;
    const where = new URL(request.url).origin;
    if (!retryable || item.failures > retries) {
      this.log.warn({ alert: alert.event, name: alert.name, to: where, attempts: item.failures, err: problem }, 'alert could not be delivered; giving up on it');
      return null;
    }
    const delay = (this.options.retryBaseMs ?? 5000) * 4 ** (item.failures - 1);
    this.log.warn({ alert: alert.event, name: alert.name, to: where, attempt: item.failures, retryInMs: delay, err: problem }, 'alert delivery failed; retrying');
    return delay;
  }

  private settle(): void {
    if (this.busy) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

export type AlertingOptions = Pick<AlertRulesConfig, 'minIntervalMs' | 'maxPerHour'> & SenderOptions;

/** The rules and the sender together, with the timer that wakes up when an expiry threshold is crossed. */
export class Alerting {
  private readonly rules: AlertRules;
  private timer: { cancel(): void } | null = null;

  private constructor(
    plan: AlertsPlan,
    readonly sender: AlertSender,
    private readonly log: Logger,
    private readonly clock: TimerClock,
    options: AlertingOptions,
  ) {
    this.rules = new AlertRules({ ...options, afterFailures: plan.afterFailures, daysLeft: plan.daysLeft }, () => clock.now());
  }

  /** `accessToken`: the matrix format's token (null for generic webhooks). */
  static create(plan: AlertsPlan, accessToken: string | null, log: Logger, clock: TimerClock, options: AlertingOptions = {}): Alerting {
    const sender = new AlertSender(transportFor(plan.target, accessToken), log, clock, options);
    return new Alerting(plan, sender, log, clock, options);
  }

  renewalFailed(failure: RenewalFailure): void {
    this.dispatch(this.rules.renewalFailed(failure));
  }

  certificateInstalled(name: string, cert: CertificateFacts): void {
    this.dispatch(this.rules.certificateInstalled(name, cert));
    this.arm();
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
    this.sender.stop();
  }

  private arm(): void {
    this.timer?.cancel();
    const at = this.rules.nextCheck();
    this.timer =
      at === null
        ? null
        : this.clock.setTimer(() => {
            this.dispatch(this.rules.checkExpiry());
            this.arm();
          }, at - this.clock.now());
  }

  private dispatch(decisions: readonly Decision[]): void {
    for (const { alert, send, suppressed } of decisions) {
      const fields = { alert: alert.event, name: alert.name, severity: alert.severity };
      if (send) {
        this.log.info(fields, `alert: ${alert.message}`);
        this.sender.send(alert);
      } else this.log.warn({ ...fields, reason: suppressed }, `alert not sent (rate limit): ${alert.message}`);
    }
  }
}
