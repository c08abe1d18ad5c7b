// Charts with uPlot (loaded by index.html as a global): time series and bar charts.
const uPlot = window.uPlot;

export const COLORS = ["#1f6feb", "#e36209", "#1a7f37", "#8250df", "#cf222e", "#0a7ea4", "#9a6700"];

function width(el) {
  return Math.max(280, el.clientWidth || el.parentElement.clientWidth || 600);
}

// Keeps every chart as wide as its box.
const observer = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const plot = entry.target.plot;
    if (plot) plot.setSize({ width: width(entry.target), height: plot.height });
  }
});

function mount(el, opts, data) {
  el.replaceChildren();
  const plot = new uPlot({ width: width(el), ...opts }, data, el);
  el.plot = plot;
  el.dataset.points = String(data[0].length);
  observer.observe(el);
  return plot;
}

// Identifiers are UUIDs: their first characters tell them apart on an axis.
const short = (id) => (id.length > 12 ? `${id.slice(0, 8)}…` : id);

const compact = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

// A line chart over time: x in seconds since the epoch, one series per name.
export function timeChart(el, { x, series, height = 240, yLabel = "", onZoom, bars = false }) {
  const opts = {
    height,
    cursor: { drag: { x: true, y: false, setScale: !onZoom }, sync: onZoom ? { key: "zoom" } : undefined },
    scales: { x: { time: true } },
    axes: [{}, { label: yLabel, size: 60, values: (u, vals) => vals.map((v) => compact.format(v)) }],
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLORS[i % COLORS.length],
        fill: bars ? `${COLORS[i % COLORS.length]}33` : undefined,
        width: 1.5,
        spanGaps: false,
        points: { show: false },
        paths: bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined,
        value: (u, v) => (v == null ? "–" : compact.format(v)),
      })),
    ],
    hooks: {},
  };
  if (onZoom) {
    opts.hooks.setSelect = [
      (u) => {
        if (u.select.width < 3) return;
        const lo = u.posToVal(u.select.left, "x");
        const hi = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        onZoom(lo, hi);
      },
    ];
  }
  return mount(el, opts, [x, ...series.map((s) => s.values)]);
}

// A bar chart of named categories (robots, quarters): one value per label.
export function barChart(el, { labels, values, label, xLabel = "", height = 260, yLabel = "", format }) {
  const fmt = format || ((v) => compact.format(v));
  const x = labels.map((_, i) => i);
  const many = labels.length > 6;
  const shown = labels.length <= 24; // more would overlap: the legend names the bar under the cursor
  const opts = {
    height,
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: false, range: (u, min, max) => [min - 0.6, max + 0.6] },
      y: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] },
    },
    axes: [
      {
        splits: () => x,
        values: (u, vals) => vals.map((v) => (shown ? short(labels[v] ?? "") : "")),
        rotate: many ? -60 : 0,
        size: many && shown ? 80 : 40,
        gap: 4,
      },
      { label: yLabel, size: 60, values: (u, vals) => vals.map((v) => fmt(v)) },
    ],
    series: [
      { label: xLabel, value: (u, v) => (v == null ? "–" : labels[v] ?? "") },
      {
        label,
        stroke: COLORS[0],
        fill: `${COLORS[0]}bb`,
        paths: uPlot.paths.bars({ size: [0.7, 60] }),
        points: { show: false },
        value: (u, v) => (v == null ? "–" : fmt(v)),
      },
    ],
  };
  return mount(el, opts, [x, values]);
}
