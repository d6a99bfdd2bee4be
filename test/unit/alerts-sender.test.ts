/** Alert delivery (AlertSender, Alerting) against a real loopback receiver, with a manual clock for the retry and expiry timers. */
import * as http from 'node:http';
import { ManualClock } from '../../src/control/clock';
import type { Alert } from '../../src/observe/alert-rules';
import { Alerting, AlertSender, genericWebhook, matrixRoom } from '../../src/observe/alerts';
import { captureLog, waitFor } from '../support/wait';

const DAY = 86_400_000;

let server: http.Server;
let url: string;
let answers: number[];
let received: Array<{ method: string; url: string; body: string }>;

beforeEach(async () => {
  answers = [];
  received = [];
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      received.push({ method: req.method!, url: req.url!, body });
      res.writeHead(answers.shift() ?? 200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`;
});
afterEach(() => new Promise<void>((resolve) => server.close(() => resolve())));

const alert = (name: string): Alert => ({ event: 'renewal-failing', name, severity: 'warning', message: `m ${name}`, details: {}, at: '2030-01-01T00:00:00.000Z' });

test('a failing webhook is retried with growing delays, then given up (warn), never thrown', async () => {
  const clock = new ManualClock();
  const { log, lines } = captureLog();
  const sender = new AlertSender(genericWebhook(url), log, clock, { retries: 2, retryBaseMs: 1000 });
  answers = [500, 503, 500];
  sender.send(alert('a'));
  await waitFor('first try', () => received.length === 1 && clock.pendingTimers().length === 1);
  expect(clock.nextDue()! - clock.now()).toBe(1000);
  clock.advance(1000);
  await waitFor('second try', () => received.length === 2 && clock.pendingTimers().length === 1);
  expect(clock.nextDue()! - clock.now()).toBe(4000);
  clock.advance(4000);
  await sender.idle();
  expect(received).toHaveLength(3);
  expect(lines.filter((l) => l.msg === 'alert delivery failed; retrying').map((l) => [l.level, l.attempt, l.err])).toEqual([
    ['warn', 1, 'HTTP 500: '],
    ['warn', 2, 'HTTP 503: '],
  ]);
  expect(lines.find((l) => l.msg === 'alert could not be delivered; giving up on it')).toMatchObject({ level: 'warn', attempts: 3, err: 'HTTP 500: ' });
});

test('a 4xx other than 429 is not retried; a receiver that is gone is', async () => {
  const clock = new ManualClock();
  const { log, lines } = captureLog();
  const sender = new AlertSender(genericWebhook(url), log, clock, { retries: 3, retryBaseMs: 10 });
  answers = [401];
  sender.send(alert('a'));
  await sender.idle();
  expect(received).toHaveLength(1);
  expect(lines.some((l) => l.msg === 'alert could not be delivered; giving up on it')).toBe(true);

  const gone = new AlertSender(genericWebhook('http://127.0.0.1:1/hook'), log, clock, { retries: 1, retryBaseMs: 10 });
  gone.send(alert('b'));
  await waitFor('a retry armed', () => clock.pendingTimers().length === 1);
  expect(lines.find((l) => l.msg === 'alert delivery failed; retrying' && l.name === 'b')!.err).toMatch(/ECONNREFUSED/);
  clock.advance(10);
  await gone.idle();
});

test('the queue is bounded (extra alerts are dropped with a warning) and delivered in order', async () => {
  const { log, lines } = captureLog();
  const sender = new AlertSender(genericWebhook(url), log, new ManualClock(), { queueSize: 2 });
  for (const name of ['a', 'b', 'c', 'd']) sender.send(alert(name));
  await sender.idle();
  expect(received.map((r) => (JSON.parse(r.body) as Alert).name)).toEqual(['a', 'b']);
  expect(lines.filter((l) => l.msg === 'alert dropped: too many alerts are waiting to be delivered').map((l) => l.name)).toEqual(['c', 'd']);
});

test('stop drops what is queued', async () => {
  const clock = new ManualClock();
  const { log, lines } = captureLog();
  const sender = new AlertSender(genericWebhook(url), log, clock, { retryBaseMs: 1000 });
  answers = [500];
  sender.send(alert('a'));
  sender.send(alert('b'));
  await waitFor('a retry armed', () => clock.pendingTimers().length === 1);
  sender.stop();
  await sender.idle();
  expect(clock.pendingTimers()).toEqual([]);
  expect(lines.find((l) => l.msg === 'stopping: undelivered alerts dropped')!.dropped).toBe(2);
  sender.send(alert('c'));
  expect(received).toHaveLength(1);
});

test('matrixRoom: PUT to the room with a per-alert transaction ID and a Bearer token', () => {
  const request = matrixRoom('https://hs.example', '!room:example.com', 'tok')(alert('a'), 'txn-1');
  expect(request).toEqual({
    url: 'https://hs.example/_matrix/client/v3/rooms/!room%3Aexample.com/send/m.room.message/txn-1',
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: 'Bearer tok' },
    body: JSON.stringify({ msgtype: 'm.notice', body: '[matrix-edge warning] m a' }),
  });
});

test('Alerting wakes up when a days-left threshold is crossed', async () => {
  const clock = new ManualClock(Date.UTC(2030, 0, 1));
  const { log } = captureLog();
  const alerting = Alerting.create({ target: { format: 'generic', url }, afterFailures: 3, daysLeft: [14, 7] }, null, log, clock);
  const now = clock.now();
  alerting.certificateInstalled('a.example', { serial: '01', notBefore: now, notAfter: now + 90 * DAY });
  expect(clock.pendingTimers()).toEqual([now + 76 * DAY]);
  clock.advance(76 * DAY);
  await alerting.sender.idle();
  expect(received.map((r) => JSON.parse(r.body) as Alert).map((a) => [a.event, a.name, a.details.threshold])).toEqual([['certificate-expiring', 'a.example', 14]]);
  expect(clock.pendingTimers()).toEqual([now + 83 * DAY]);
  alerting.stop();
  expect(clock.pendingTimers()).toEqual([]);
});
