/**
 * Structured logs (pino) to stdout: one logger per component via `child({ component })`, each
 * component's level settable apart (`log.levels`), JSON lines or a `pretty` text form for terminals.
 */
import pino from 'pino';
import type { LogPlan } from '../config/plan';
import { prettyStream } from './pretty';

export type Logger = pino.Logger;
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

/**
 * The log settings of a plan as a logger: levels per component and the output format. `auto` (no
 * log.format set) is pretty text on a terminal and JSON lines otherwise (a pipe, a file, journald),
 * as Caddy does.
 */
export function createPlanLogger(plan: LogPlan, destination?: pino.DestinationStream, isTTY = process.stdout.isTTY === true): Logger {
  const out = destination ?? pino.destination({ fd: 1, sync: false });
  const pretty = plan.format === 'pretty' || (plan.format === 'auto' && isTTY);
  return createLogger(plan.level, pretty ? prettyStream(out) : out, plan.levels);
}

export function createLogger(
  level: LogLevel = 'info',
  destination?: pino.DestinationStream,
  levels: Readonly<Partial<Record<string, LogLevel>>> = {},
): Logger {
  const apart = Object.keys(levels).length > 0;
  return pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // A component's logger (and the loggers made from it) takes the level set for it.
      ...(apart
        ? {
            onChild: (child: Logger) => {
              const component = (child.bindings() as { component?: unknown }).component;
              const own = typeof component === 'string' ? levels[component] : undefined;
              if (own !== undefined) child.level = own;
            },
          }
        : {}),
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

/** A logger that drops everything: for unit tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
