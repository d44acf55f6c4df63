// The bench:all report: runs of every benchmark folded into one markdown page
// with one SVG chart per benchmark — meshguard beside each peer, the median
// over runs of each run's p50, and the spread (min–max of the run p50s).
//
// Input: for each benchmark, the published JSON of each run ({ bench, rows:
// [{ system, metric, unit, p50, p99, mean, n }] }, lib/stats.mjs) and the
// load average around it.

/** median of a non-empty array of numbers (the mean of the two middle values for an even count). */
export function median(xs) {
  if (!Array.isArray(xs) || xs.length === 0) throw new RangeError('median: no values');
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * fold turns the runs of one benchmark into one entry per (metric, unit,
 * system): { metric, unit, system, p50: median of run p50s, min, max (of run
 * p50s), p99: median of run p99s, mean: mean of run means, runs, samples
 * (median samples per run) }, in the order the rows first appeared.
 *
 * @param {Array<{ rows: Array<{system:string,metric:string,unit:string,p50:number,p99:number,mean:number,n:number}> }>} runs
 */
export function fold(runs) {
  const by = new Map();
  for (const run of runs) {
    for (const r of run.rows) {
      const k = `${r.metric}\u0000${r.unit}\u0000${r.system}`;
      if (!by.has(k)) by.set(k, { metric: r.metric, unit: r.unit, system: r.system, p50s: [], p99s: [], means: [], ns: [] });
      const e = by.get(k);
      e.p50s.push(r.p50);
      e.p99s.push(r.p99);
      e.means.push(r.mean);
      e.ns.push(r.n);
    }
  }
  return [...by.values()].map((e) => ({
    metric: e.metric,
    unit: e.unit,
    system: e.system,
    p50: median(e.p50s),
    min: Math.min(...e.p50s),
    max: Math.max(...e.p50s),
    p99: median(e.p99s),
    mean: e.means.reduce((a, b) => a + b, 0) / e.means.length,
    runs: e.p50s.length,
    samples: median(e.ns),
  }));
}

/** compared groups folded entries by metric and keeps the metrics meshguard has together with at least one other system. */
export function compared(entries) {
  const by = new Map();
  for (const e of entries) {
    const k = `${e.metric} (${e.unit})`;
    if (!by.has(k)) by.set(k, []);
    by.get(k).push(e);
  }
  return [...by.entries()].filter(([, es]) => es.length > 1 && es.some((e) => e.system.startsWith('meshguard'))).map(([title, es]) => ({ title, entries: es }));
}

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** fmt keeps about three significant figures. */
export function fmt(x) {
  const a = Math.abs(x);
  if (a >= 1000) return Math.round(x).toLocaleString('en-US');
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(3);
}

const COLORS = { meshguard: '#2563eb', other: '#9ca3af' };
const W = 760;
const LABEL_W = 230;
const BAR_W = W - LABEL_W - 150;
const ROW_H = 18;

/**
 * chartSvg draws one benchmark's compared metrics as horizontal bars, one
 * group per metric scaled to that metric's largest max: the bar is the
 * median p50 over runs, the whisker the min–max of the run p50s, the label
 * the median and the spread. meshguard's bars are blue, the peers' grey.
 */
export function chartSvg(bench, groups) {
  let y = 28;
  const parts = [];
  for (const g of groups) {
    parts.push(`<text x="4" y="${y + 12}" font-weight="bold">${esc(g.title)}</text>`);
    y += ROW_H;
    const top = Math.max(...g.entries.map((e) => e.max)) || 1;
    const x = (v) => LABEL_W + (Math.max(0, v) / top) * BAR_W;
    for (const e of g.entries) {
      const color = e.system.startsWith('meshguard') ? COLORS.meshguard : COLORS.other;
      parts.push(
        `<text x="${LABEL_W - 6}" y="${y + 12}" text-anchor="end">${esc(e.system)}</text>`,
        `<rect x="${LABEL_W}" y="${y + 3}" width="${(x(e.p50) - LABEL_W).toFixed(1)}" height="${ROW_H - 6}" fill="${color}"/>`,
        `<line x1="${x(e.min).toFixed(1)}" x2="${x(e.max).toFixed(1)}" y1="${y + ROW_H / 2}" y2="${y + ROW_H / 2}" stroke="#111" stroke-width="1.5"/>`,
        `<line x1="${x(e.min).toFixed(1)}" x2="${x(e.min).toFixed(1)}" y1="${y + 4}" y2="${y + ROW_H - 4}" stroke="#111"/>`,
        `<line x1="${x(e.max).toFixed(1)}" x2="${x(e.max).toFixed(1)}" y1="${y + 4}" y2="${y + ROW_H - 4}" stroke="#111"/>`,
        `<text x="${(x(e.max) + 6).toFixed(1)}" y="${y + 12}">${esc(`${fmt(e.p50)} (${fmt(e.min)}–${fmt(e.max)})`)}</text>`,
      );
      y += ROW_H;
    }
    y += 8;
  }
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y + 4}" viewBox="0 0 ${W} ${y + 4}" font-family="sans-serif" font-size="11">\n` +
    `<rect width="100%" height="100%" fill="#fff"/>\n` +
    `<text x="4" y="16" font-size="13" font-weight="bold">${esc(`bench/${bench}: median of run p50s, whisker = min–max over runs`)}</text>\n` +
    parts.join('\n') +
    '\n</svg>\n'
  );
}

/**
 * markdown renders the report. `benches` is [{ name, command, runs: [json],
 * load: [[before, after] per run], seconds: [per run], skipped?: reason }];
 * `meta` holds { date, commit, cpus, node, runs }. Returns { md, svgs:
 * Map<file, svg> }; charts are referenced as `<dir>/<bench>.svg`.
 */
export function markdown(benches, meta, dir) {
  const svgs = new Map();
  const out = [
    '# Benchmark report (`npm run bench:all`)',
    '',
    `${meta.date} · commit \`${meta.commit}\` · ${meta.cpus} CPUs · Node ${meta.node} · ${meta.runs} run(s) per benchmark, benchmarks interleaved, systems alternating within each benchmark.`,
    '',
    'Each figure is the **median over runs of each run\'s p50**, with the **spread (min–max of the run p50s)**; p99 is the median of the run p99s. ' +
      '"meshguard ÷" is meshguard\'s median over the system\'s (lower is better for times and memory, higher for throughput). ' +
      'The machine was shared: the load average (1 min) before and after each run is given per benchmark.',
    '',
  ];
  for (const b of benches) {
    out.push(`## ${b.name}`, '', `\`${b.command}\``, '');
    if (b.skipped) {
      out.push(`Skipped: ${b.skipped}`, '');
      continue;
    }
    const loads = b.load.flat();
    out.push(`${b.runs.length} run(s), ${fmt(median(b.seconds))} s each (median); load average ${fmt(Math.min(...loads))}–${fmt(Math.max(...loads))}.`, '');
    const entries = fold(b.runs);
    const groups = compared(entries);
    if (groups.length) {
      const file = `${b.name}.svg`;
      svgs.set(file, chartSvg(b.name, groups));
      out.push(`![${b.name}](${dir}/${file})`, '');
    }
    out.push('| metric | unit | system | p50 (median) | spread of p50 | p99 (median) | meshguard ÷ | runs × samples |', '|---|---|---|---|---|---|---|---|');
    const mesh = new Map(entries.filter((e) => e.system === 'meshguard').map((e) => [`${e.metric}\u0000${e.unit}`, e]));
    for (const e of entries) {
      const m = mesh.get(`${e.metric}\u0000${e.unit}`);
      const r = m && e.system !== 'meshguard' && e.p50 !== 0 ? m.p50 / e.p50 : undefined;
      const ratio = r === undefined ? '' : `${r >= 0.1 ? r.toFixed(2) : r.toPrecision(2)}×`;
      out.push(`| ${esc(e.metric)} | ${e.unit} | ${esc(e.system)} | ${fmt(e.p50)} | ${fmt(e.min)}–${fmt(e.max)} | ${fmt(e.p99)} | ${ratio} | ${e.runs} × ${e.samples} |`);
    }
    out.push('');
  }
  return { md: out.join('\n'), svgs };
}
