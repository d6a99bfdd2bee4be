/**
 * From samples to the table (Markdown), the raw JSON and the SVG bar chart (hand-written SVG).
 * Ratios are paired: matrix-edge / Caddy and matrix-edge / direct are taken within each round
 * (the measurements of one round ran back to back), then summarised over the rounds.
 */
import { fmt, fmtSummary, summarize, type Summary } from './stats';
import type { Metrics, Target } from './scenarios';

export interface Sample {
  readonly scenario: string;
  readonly target: Target;
  readonly round: number;
  readonly metrics: Metrics;
}

export interface Row {
  readonly scenario: string;
  readonly metric: string;
  readonly label: string;
  readonly unit: string;
  readonly better: 'higher' | 'lower';
}

export const ROWS: readonly Row[] = [
  { scenario: 'h1', metric: 'rps', label: 'small JSON GET, HTTP/1.1 keep-alive (wrk -c32)', unit: 'req/s', better: 'higher' },
  { scenario: 'h1', metric: 'p50', label: '… p50 latency', unit: 'ms', better: 'lower' },
  { scenario: 'h1', metric: 'p99', label: '… p99 latency', unit: 'ms', better: 'lower' },
  { scenario: 'h2', metric: 'rps', label: 'small JSON GET, HTTP/2 (h2load -c32 -m10)', unit: 'req/s', better: 'higher' },
  { scenario: 'h2', metric: 'p50', label: '… p50 latency', unit: 'ms', better: 'lower' },
  { scenario: 'h2', metric: 'p99', label: '… p99 latency', unit: 'ms', better: 'lower' },
  { scenario: 'handshake', metric: 'rps', label: 'new TLS connection per request (wrk -c16, Connection: close)', unit: 'handshakes/s', better: 'higher' },
  { scenario: 'wellknown', metric: 'rps', label: 'inline /.well-known/matrix/server (wrk -c32)', unit: 'req/s', better: 'higher' },
  { scenario: 'upload', metric: 'mbps', label: 'upload streamed through (curl, HTTP/1.1)', unit: 'MB/s', better: 'higher' },
  { scenario: 'upload', metric: 'peakRssMiB', label: '… peak RSS, fresh server process(es)', unit: 'MiB', better: 'lower' },
  { scenario: 'download', metric: 'mbps', label: 'download streamed through (curl, HTTP/1.1)', unit: 'MB/s', better: 'higher' },
  { scenario: 'download', metric: 'peakRssMiB', label: '… peak RSS, fresh server process(es)', unit: 'MiB', better: 'lower' },
  { scenario: 'idle', metric: 'kibPerConn', label: 'idle long polls held: RSS per connection', unit: 'KiB', better: 'lower' },
  { scenario: 'idle', metric: 'baseRssMiB', label: 'RSS at rest, fresh process (all its processes)', unit: 'MiB', better: 'lower' },
  { scenario: 'longrun', metric: 'rssMiB', label: "RSS of the long-running instance after a round's load", unit: 'MiB', better: 'lower' },
  { scenario: 'startup-fresh', metric: 'firstMs', label: 'start → first verified answer, fresh storage (ACME, Pebble)', unit: 'ms', better: 'lower' },
  { scenario: 'startup-fresh', metric: 'allMs', label: '… both names answering', unit: 'ms', better: 'lower' },
  { scenario: 'startup-stored', metric: 'firstMs', label: 'start → first verified answer, stored certificates', unit: 'ms', better: 'lower' },
];

function values(samples: readonly Sample[], scenario: string, target: Target, metric: string): number[] {
  return samples.filter((s) => s.scenario === scenario && s.target === target && metric in s.metrics).map((s) => s.metrics[metric]!);
}

/** Per-round a/b for the rounds where both were measured. */
export function pairedRatios(samples: readonly Sample[], scenario: string, metric: string, a: Target, b: Target): number[] {
  const out: number[] = [];
  const rounds = new Set(samples.filter((s) => s.scenario === scenario).map((s) => s.round));
  for (const round of rounds) {
    const x = samples.find((s) => s.scenario === scenario && s.target === a && s.round === round)?.metrics[metric];
    const y = samples.find((s) => s.scenario === scenario && s.target === b && s.round === round)?.metrics[metric];
    if (x !== undefined && y !== undefined && y !== 0) out.push(x / y);
  }
  return out;
}

export interface RowResult {
  readonly row: Row;
  readonly direct: Summary | null;
  readonly edge: Summary | null;
  readonly caddy: Summary | null;
  readonly edgeOverCaddy: Summary | null;
  readonly edgeOverDirect: Summary | null;
}

export function summarizeRows(samples: readonly Sample[]): RowResult[] {
  return ROWS.map((row) => ({
    row,
    direct: summarize(values(samples, row.scenario, 'direct', row.metric)),
    edge: summarize(values(samples, row.scenario, 'edge', row.metric)),
    caddy: summarize(values(samples, row.scenario, 'caddy', row.metric)),
    edgeOverCaddy: summarize(pairedRatios(samples, row.scenario, row.metric, 'edge', 'caddy')),
    edgeOverDirect: summarize(pairedRatios(samples, row.scenario, row.metric, 'edge', 'direct')),
  })).filter((r) => r.edge !== null || r.caddy !== null || r.direct !== null);
}

const ratio = (x: number): string => x.toFixed(2);

export function markdownTable(rows: readonly RowResult[]): string {
  const lines = [
    '| scenario | unit | better | direct | matrix-edge | Caddy | edge / Caddy | edge / direct |',
    '|---|---|---|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.row.label} | ${r.row.unit} | ${r.row.better === 'higher' ? '↑' : '↓'} | ${fmtSummary(r.direct)} | ${fmtSummary(r.edge)} | ${fmtSummary(r.caddy)} | ${fmtSummary(r.edgeOverCaddy, ratio)} | ${fmtSummary(r.edgeOverDirect, ratio)} |`,
    );
  }
  return lines.join('\n');
}

/** The log-level round: matrix-edge at warn vs at info, same round. */
export function infoTable(samples: readonly Sample[]): string | null {
  const rows = ['h1', 'h2']
    .map((scenario) => ({
      scenario,
      warn: summarize(values(samples, scenario, 'edge', 'rps')),
      info: summarize(values(samples, scenario, 'edge-info', 'rps')),
      ratio: summarize(pairedRatios(samples, scenario, 'rps', 'edge-info', 'edge')),
    }))
    .filter((r) => r.info !== null);
  if (rows.length === 0) return null;
  return [
    '| small JSON GET | matrix-edge, log warn (req/s) | matrix-edge, log info (req/s) | info / warn |',
    '|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.scenario === 'h1' ? 'HTTP/1.1 (wrk -c32)' : 'HTTP/2 (h2load -c32 -m10)'} | ${fmtSummary(r.warn)} | ${fmtSummary(r.info)} | ${fmtSummary(r.ratio, ratio)} |`),
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// SVG

const COLORS: Record<'direct' | 'edge' | 'caddy', string> = { direct: '#9aa0a6', edge: '#1a73e8', caddy: '#e37400' };
const NAMES: Record<'direct' | 'edge' | 'caddy', string> = { direct: 'direct (upstream, plain HTTP)', edge: 'matrix-edge', caddy: 'Caddy' };

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

interface ChartRow {
  readonly label: string;
  readonly unit: string;
  readonly bars: ReadonlyArray<{ who: 'direct' | 'edge' | 'caddy'; s: Summary }>;
}

function panel(title: string, rows: readonly ChartRow[], y0: number, width: number): { svg: string; height: number } {
  const labelW = 250;
  const barMax = width - labelW - 150;
  const barH = 11;
  const parts: string[] = [`<text x="12" y="${y0 + 16}" class="h">${esc(title)}</text>`];
  let y = y0 + 30;
  for (const row of rows) {
    const top = Math.max(...row.bars.map((b) => b.s.max));
    parts.push(`<text x="12" y="${y + 11}" class="l">${esc(row.label)}</text>`);
    parts.push(`<text x="12" y="${y + 24}" class="u">${esc(row.unit)}</text>`);
    row.bars.forEach((b, i) => {
      const by = y + i * (barH + 3);
      const scale = (v: number): number => (top > 0 ? (v / top) * barMax : 0);
      const w = Math.max(1, scale(b.s.median));
      parts.push(`<rect x="${labelW}" y="${by}" width="${w.toFixed(1)}" height="${barH}" fill="${COLORS[b.who]}"/>`);
      if (b.s.max > b.s.min) {
        const x1 = labelW + scale(b.s.min);
        const x2 = labelW + scale(b.s.max);
        const my = by + barH / 2;
        parts.push(`<path d="M${x1.toFixed(1)} ${my}H${x2.toFixed(1)}M${x1.toFixed(1)} ${by + 2}V${by + barH - 2}M${x2.toFixed(1)} ${by + 2}V${by + barH - 2}" class="w"/>`);
      }
      parts.push(`<text x="${(labelW + Math.max(w, scale(b.s.max)) + 6).toFixed(1)}" y="${by + barH - 1}" class="v">${esc(fmt(b.s.median))}</text>`);
    });
    y += Math.max(32, row.bars.length * (barH + 3) + 10);
  }
  return { svg: parts.join('\n'), height: y - y0 };
}

export function chartSvg(rows: readonly RowResult[], subtitle: string): string {
  const width = 760;
  const pick = (r: RowResult, who: ReadonlyArray<'direct' | 'edge' | 'caddy'>): ChartRow['bars'] =>
    who.flatMap((w) => (r[w] ? [{ who: w, s: r[w]! }] : []));
  const short: Record<string, string> = {
    'h1/rps': 'small GET, HTTP/1.1',
    'h2/rps': 'small GET, HTTP/2',
    'handshake/rps': 'new TLS connection per request',
    'wellknown/rps': 'inline well-known',
    'upload/mbps': 'upload streamed through',
    'download/mbps': 'download streamed through',
    'h1/p99': 'p99 latency, HTTP/1.1',
    'h2/p99': 'p99 latency, HTTP/2',
    'upload/peakRssMiB': 'peak RSS during upload',
    'download/peakRssMiB': 'peak RSS during download',
    'idle/kibPerConn': 'RSS per idle long poll',
    'idle/baseRssMiB': 'RSS at rest, fresh',
    'longrun/rssMiB': 'RSS after load, long-running',
    'startup-fresh/firstMs': 'start → answer, fresh ACME',
    'startup-stored/firstMs': 'start → answer, stored certs',
  };
  const toChart = (r: RowResult, who: ReadonlyArray<'direct' | 'edge' | 'caddy'>): ChartRow => ({
    label: short[`${r.row.scenario}/${r.row.metric}`] ?? r.row.label,
    unit: r.row.unit,
    bars: pick(r, who),
  });
  const higher = rows.filter((r) => r.row.better === 'higher').map((r) => toChart(r, ['direct', 'edge', 'caddy']));
  const lower = rows
    .filter((r) => r.row.better === 'lower' && `${r.row.scenario}/${r.row.metric}` in short)
    .map((r) => toChart(r, ['edge', 'caddy']));
  const top = 58;
  const a = panel('Throughput — higher is better (bar: median of rounds; whisker: min–max)', higher.filter((r) => r.bars.length > 0), top, width);
  const b = panel('Cost — lower is better', lower.filter((r) => r.bars.length > 0), top + a.height + 8, width);
  const height = top + a.height + 8 + b.height + 10;
  const legend = (['direct', 'edge', 'caddy'] as const)
    .map((w, i) => `<rect x="${12 + i * 220}" y="38" width="10" height="10" fill="${COLORS[w]}"/><text x="${26 + i * 220}" y="47" class="u">${esc(NAMES[w])}</text>`)
    .join('\n');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif">`,
    '<style>.h{font-size:13px;font-weight:600;fill:#202124}.l{font-size:12px;fill:#202124}.u{font-size:10px;fill:#5f6368}.v{font-size:10px;fill:#202124}.w{stroke:#202124;stroke-width:1;fill:none}</style>',
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="12" y="20" class="h">matrix-edge vs Caddy vs direct, loopback</text>`,
    `<text x="12" y="33" class="u">${esc(subtitle)}</text>`,
    legend,
    a.svg,
    b.svg,
    '</svg>',
    '',
  ].join('\n');
}
