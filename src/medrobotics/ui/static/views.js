// The dashboard's pages: each builds its cards and fills them from the JSON API.
import { get } from "./api.js";
import { barChart, timeChart } from "./charts.js";
import { badge, card, el, empty, facts, fmt, idLink, link, money, num, pct, table, tiles, when } from "./dom.js";

const CATEGORIES = ["urological", "gynecological", "cardiac", "thoracic", "general", "orthopedic"];
const STATUSES = ["completed", "in_progress", "aborted", "cancelled"];
const ROBOT_STATUSES = ["operational", "maintenance", "retired"];
const secs = (iso) => Date.parse(iso) / 1000;

function page(title, sub, ...cards) {
  const head = [el("h1", null, title)];
  if (sub) head.push(el("p", { class: "sub" }, sub));
  return [...head, el("div", { class: "grid" }, ...cards)];
}

// -- overview --------------------------------------------------------------------------------

export function overview(ctx) {
  const q = (path, params) => get(path, params, ctx);
  return page(
    "Fleet overview",
    "The last 12 months unless said otherwise. Select a range in a time chart to zoom; double-click to reset.",
    card("Fleet by status", async (body) => {
      const pages = await Promise.all(ROBOT_STATUSES.map((status) => q("/api/robots", { status, limit: 1 })));
      const total = pages.reduce((n, p) => n + p.total, 0);
      if (!total) return body.replaceChildren(empty("No robots registered yet."));
      const box = el("div", { class: "chart", "data-chart": "fleet" });
      body.replaceChildren(
        tiles([["robots", num.format(total)], ...ROBOT_STATUSES.map((s, i) => [s, num.format(pages[i].total)])]),
        box,
        el("p", { class: "legend-note" }, "Robots: ", ...ROBOT_STATUSES.flatMap((s, i) => [link("/robots", s, { status: s }), " "])),
      );
      barChart(box, { labels: ROBOT_STATUSES, values: pages.map((p) => p.total), label: "robots", xLabel: "status", height: 200 });
    }, { ctx }),
    card("Outcomes", async (body) => {
      const s = await q("/api/analytics/outcomes-summary", { days: 365 });
      const o = s.overall;
      if (!o.outcomes) return body.replaceChildren(empty("No outcomes recorded in the last 12 months."));
      body.replaceChildren(
        tiles([
          ["outcomes", num.format(o.outcomes)],
          ["success", pct(o.successful / o.outcomes)],
          ["complication rate", pct(o.complication_rate)],
          ["readmission rate", pct(o.readmission_rate)],
          ["mean stay (days)", fmt(o.mean_hospital_stay_days)],
        ]),
        table(
          [
            { label: "category", cell: (r) => r.procedure_category },
            { label: "outcomes", num: true, cell: (r) => num.format(r.outcomes) },
            { label: "success", num: true, cell: (r) => pct(r.outcomes ? r.successful / r.outcomes : null) },
            { label: "complications", num: true, cell: (r) => pct(r.complication_rate) },
            { label: "readmissions", num: true, cell: (r) => pct(r.readmission_rate) },
          ],
          s.by_category,
        ),
      );
    }, { ctx }),
    card("Procedure volume per week, by category", async (body) => {
      const answers = await Promise.all(CATEGORIES.map((category) => q("/api/analytics/procedure-volume", { interval: "week", days: 365, category })));
      const times = [...new Set(answers.flatMap((a) => a.buckets.map((b) => b.bucket_start)))].sort();
      if (!times.length) return body.replaceChildren(empty("No procedures in the last 12 months."));
      const series = answers.map((a, i) => {
        const at = new Map(a.buckets.map((b) => [b.bucket_start, b.procedures]));
        return { label: CATEGORIES[i], values: times.map((t) => at.get(t) ?? 0) };
      });
      const box = el("div", { class: "chart", "data-chart": "volume" });
      body.replaceChildren(box);
      timeChart(box, { x: times.map(secs), series, yLabel: "procedures" });
    }, { ctx, wide: true }),
    card("Utilization per robot", async (body) => {
      const u = await q("/api/analytics/robot-utilization", { days: 365 });
      if (!u.robots.length) return body.replaceChildren(empty("No robots registered yet."));
      const robots = [...u.robots].sort((a, b) => b.utilization - a.utilization);
      const box = el("div", { class: "chart", "data-chart": "utilization" });
      body.replaceChildren(box, el("p", { class: "legend-note" }, "Share of the 12 months in use (hours in procedures / hours in the window)."));
      barChart(box, { labels: robots.map((r) => r.robot_id), values: robots.map((r) => r.utilization * 100), label: "utilization", xLabel: "robot", yLabel: "% of time", format: (v) => `${num.format(v)} %` });
    }, { ctx }),
    card("Maintenance costs", async (body) => {
      const m = await q("/api/analytics/maintenance-costs", { days: 365 });
      const costly = m.robots.filter((r) => r.visits > 0).slice(0, 15);
      if (!costly.length) return body.replaceChildren(empty("No maintenance recorded in the last 12 months."));
      const box = el("div", { class: "chart", "data-chart": "maintenance" });
      body.replaceChildren(
        tiles([["total cost", money.format(m.total_cost)], ["downtime (hours)", num.format(m.downtime_hours)], ["robots serviced", String(m.robots.filter((r) => r.visits).length)]]),
        box,
        el("p", { class: "legend-note" }, "The 15 costliest robots."),
      );
      barChart(box, { labels: costly.map((r) => r.robot_id), values: costly.map((r) => r.total_cost), label: "cost", xLabel: "robot", yLabel: "USD", format: (v) => money.format(v) });
    }, { ctx }),
  );
}

// -- robots ----------------------------------------------------------------------------------

function filterForm(fields, values, onSubmit) {
  const form = el("form", { class: "filters" });
  for (const f of fields) {
    const input = f.options
      ? el("select", { name: f.name }, el("option", { value: "" }, "any"), f.options.map((o) => el("option", { value: o, selected: values.get(f.name) === o }, o)))
      : el("input", { name: f.name, type: f.type || "text", value: values.get(f.name) || "", placeholder: f.placeholder || "", size: f.size || 14 });
    form.append(el("label", null, f.label, input));
  }
  form.append(el("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const params = {};
    for (const [k, v] of new FormData(form)) if (v) params[k] = v;
    onSubmit(params);
  });
  return form;
}

export function robots(ctx) {
  const params = ctx.params;
  const offset = Number(params.get("offset") || 0);
  const wanted = { status: params.get("status"), facility_id: params.get("facility_id"), limit: 50, offset };
  const form = filterForm(
    [
      { name: "status", label: "status", options: ROBOT_STATUSES },
      { name: "facility_id", label: "facility", placeholder: "facility id" },
    ],
    params,
    (p) => ctx.go("/robots", p),
  );
  return page("Robots", null, card("Robots", async (body) => {
    const p = await get("/api/robots", wanted, ctx);
    if (!p.items.length) return body.replaceChildren(form, empty("No robots match these filters."));
    const keep = Object.fromEntries([...params].filter(([k]) => k !== "offset"));
    body.replaceChildren(
      form,
      table(
        [
          { label: "robot", cell: (r) => idLink(`/robots/${encodeURIComponent(r.robot_id)}`, r.robot_id) },
          { label: "serial", cell: (r) => r.robot_serial_number || "–" },
          { label: "model", cell: (r) => r.robot_model },
          { label: "facility", cell: (r) => r.facility_name || r.facility_id },
          { label: "status", cell: (r) => badge(r.status) },
          { label: "firmware", cell: (r) => r.firmware_version || "–" },
          { label: "last maintenance", cell: (r) => r.last_maintenance_date || "–" },
          { label: "installed", cell: (r) => r.installation_date || "–" },
        ],
        p.items,
      ),
      el("div", { class: "pager" },
        `${offset + 1}–${offset + p.items.length} of ${p.total}`,
        offset > 0 ? link("/robots", "← previous", { ...keep, offset: Math.max(0, offset - p.limit) }) : null,
        p.next ? link("/robots", "next →", { ...keep, offset: offset + p.limit }) : null,
      ),
    );
  }, { ctx, wide: true }));
}

export function robot(ctx, id) {
  const q = (path, params) => get(path, params, ctx);
  const detail = q(`/api/robots/${encodeURIComponent(id)}`);
  detail.catch(() => {}); // each card reports it
  return page(`Robot ${id}`, null,
    card("Robot", async (body) => {
      const r = await detail;
      const m = r.maintenance;
      body.replaceChildren(facts([
        ["status", badge(r.status)],
        ["model", `${r.robot_model}${r.manufacturer ? ` (${r.manufacturer})` : ""}`],
        ["serial number", r.robot_serial_number],
        ["facility", link("/robots", r.facility_name || r.facility_id, { facility_id: r.facility_id })],
        ["firmware", r.firmware_version],
        ["installed", r.installation_date],
        ["procedures", num.format(r.procedure_count)],
        ["last procedure", r.last_procedure ? link(`/procedures/${encodeURIComponent(r.last_procedure.procedure_id)}`, `${r.last_procedure.procedure_id} (${when(r.last_procedure.start_time)})`) : "–"],
        ["maintenance visits", `${num.format(m.visits)}, ${money.format(m.total_cost)}, ${num.format(m.total_downtime_hours)} h down`],
        ["last maintenance", m.last_maintenance_date ? `${m.last_maintenance_date} (${m.last_maintenance_type || "?"})` : "–"],
        ["next maintenance", m.next_maintenance_date],
      ]));
    }, { ctx }),
    card("Utilization, last 12 months", async (body) => {
      const r = await detail;
      const u = await q("/api/analytics/robot-utilization", { days: 365, facility_id: r.facility_id });
      const mine = u.robots.find((x) => x.robot_id === id);
      const volume = await q("/api/analytics/procedure-volume", { interval: "week", days: 365, robot_id: id });
      const items = [["utilization", pct(mine?.utilization)], ["hours in use", fmt(mine?.hours_in_use)], ["procedures", fmt(mine?.procedures)], ["last used", mine?.last_used_at ? mine.last_used_at.slice(0, 10) : "–"]];
      if (!volume.buckets.length) return body.replaceChildren(tiles(items), empty("No procedures in the last 12 months."));
      const box = el("div", { class: "chart", "data-chart": "robot-volume" });
      body.replaceChildren(tiles(items), box);
      timeChart(box, {
        x: volume.buckets.map((b) => secs(b.bucket_start)),
        series: [{ label: "hours in use", values: volume.buckets.map((b) => b.total_duration_minutes / 60) }],
        yLabel: "hours per week",
        height: 200,
      });
    }, { ctx }),
    card("Maintenance history, per quarter", async (body) => {
      const r = await detail;
      const now = new Date();
      const quarters = [];
      let qs = new Date(Date.UTC(now.getUTCFullYear(), Math.floor(now.getUTCMonth() / 3) * 3, 1));
      for (let i = 0; i < 8; i++) {
        const start = new Date(Date.UTC(qs.getUTCFullYear(), qs.getUTCMonth() - 3 * i, 1));
        const end = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 3, 1));
        quarters.unshift({ start, end });
      }
      const answers = await Promise.all(quarters.map(({ start, end }) => q("/api/analytics/maintenance-costs", { start: start.toISOString(), end: end.toISOString(), facility_id: r.facility_id })));
      const rows = answers.map((a) => a.robots.find((x) => x.robot_id === id) || { visits: 0, total_cost: 0, downtime_hours: 0, emergency_visits: 0 });
      const labels = quarters.map(({ start }) => `${start.getUTCFullYear()} Q${start.getUTCMonth() / 3 + 1}`);
      if (!rows.some((x) => x.visits)) return body.replaceChildren(empty("No maintenance in the last two years."));
      const box = el("div", { class: "chart", "data-chart": "maintenance-history" });
      body.replaceChildren(box, table(
        [
          { label: "quarter", cell: (x) => labels[rows.indexOf(x)] },
          { label: "visits", num: true, cell: (x) => x.visits },
          { label: "emergency", num: true, cell: (x) => x.emergency_visits },
          { label: "cost", num: true, cell: (x) => money.format(x.total_cost) },
          { label: "downtime (h)", num: true, cell: (x) => num.format(x.downtime_hours) },
        ],
        rows,
      ));
      barChart(box, { labels, values: rows.map((x) => x.total_cost), label: "cost", xLabel: "quarter", yLabel: "USD", height: 200, format: (v) => money.format(v) });
    }, { ctx }),
    card("Procedures", async (body) => {
      const p = await q("/api/procedures", { robot_id: id, limit: 10 });
      if (!p.items.length) return body.replaceChildren(empty("No procedures recorded for this robot."));
      body.replaceChildren(procedureTable(p.items, false), el("p", { class: "legend-note" }, link("/procedures", "All of this robot's procedures →", { robot_id: id })));
    }, { ctx, wide: true }),
  );
}

// -- procedures ------------------------------------------------------------------------------

function procedureTable(items, withRobot = true) {
  return table(
    [
      { label: "procedure", cell: (p) => idLink(`/procedures/${encodeURIComponent(p.procedure_id)}`, p.procedure_id) },
      { label: "start", cell: (p) => when(p.start_time) },
      { label: "category", cell: (p) => p.procedure_category },
      { label: "type", cell: (p) => p.procedure_type || "–" },
      withRobot ? { label: "robot", cell: (p) => idLink(`/robots/${encodeURIComponent(p.robot_id)}`, p.robot_id) } : null,
      { label: "status", cell: (p) => badge(p.status) },
      { label: "minutes", num: true, cell: (p) => fmt(p.duration_minutes) },
      { label: "surgeon", cell: (p) => p.surgeon_name || p.surgeon_id || "–" },
    ].filter(Boolean),
    items,
  );
}

export function procedures(ctx) {
  const params = ctx.params;
  const names = ["category", "robot_id", "status", "start", "end", "cursor"];
  const wanted = Object.fromEntries(names.map((n) => [n, params.get(n)]));
  // Dates from the form are days (UTC); the API takes ISO 8601 times.
  const form = filterForm(
    [
      { name: "category", label: "category", options: CATEGORIES },
      { name: "robot_id", label: "robot", placeholder: "robot id", size: 10 },
      { name: "status", label: "status", options: STATUSES },
      { name: "start", label: "from (UTC)", type: "date" },
      { name: "end", label: "before (UTC)", type: "date" },
    ],
    params,
    (p) => ctx.go("/procedures", p),
  );
  return page("Procedures", "Newest first.", card("Procedures", async (body) => {
    const p = await get("/api/procedures", { ...wanted, limit: 50 }, ctx);
    const keep = Object.fromEntries([...params].filter(([k]) => k !== "cursor"));
    const first = wanted.cursor ? link("/procedures", "↑ newest", keep) : null;
    if (!p.items.length) return body.replaceChildren(form, empty("No procedures match these filters."), el("div", { class: "pager" }, first));
    body.replaceChildren(
      form,
      procedureTable(p.items),
      el("div", { class: "pager" }, first, p.next_cursor ? link("/procedures", "older →", { ...keep, cursor: p.next_cursor }) : el("span", null, "the oldest page")),
    );
  }, { ctx, wide: true }));
}

const TELEMETRY = [
  { title: "Arm position", unit: "mm", channels: ["arm_position_x", "arm_position_y", "arm_position_z"], labels: ["x", "y", "z"] },
  { title: "Force feedback", unit: "N", channels: ["force_feedback_x", "force_feedback_y", "force_feedback_z"], labels: ["x", "y", "z"] },
  { title: "Grip pressure", unit: "", channels: ["grip_pressure"], labels: ["grip pressure"] },
  { title: "System temperature", unit: "°C", channels: ["system_temperature"], labels: ["temperature"] },
  { title: "Power consumption", unit: "W", channels: ["power_consumption"], labels: ["power"] },
];
const POINTS = 800; // about one per horizontal pixel: finer is invisible

export function procedure(ctx, id) {
  const detail = get(`/api/procedures/${encodeURIComponent(id)}`, null, ctx);
  detail.catch(() => {});
  const path = `/api/procedures/${encodeURIComponent(id)}/telemetry`;
  const channels = TELEMETRY.flatMap((t) => t.channels).join(",");
  const boxes = TELEMETRY.map((t) => el("div", { class: "chart", "data-chart": t.channels[0] }));
  const status = el("span");

  async function load(range) {
    const d = await detail;
    const first = secs(d.telemetry.first_timestamp);
    const last = secs(d.telemetry.last_timestamp) + 0.001;
    const [lo, hi] = range || [first, last];
    const interval_ms = Math.max(1, Math.ceil(((hi - lo) * 1000) / POINTS));
    const params = { channels, interval_ms };
    if (range) Object.assign(params, { start: new Date(lo * 1000).toISOString(), end: new Date(hi * 1000).toISOString() });
    const s = await get(path, params, ctx);
    status.textContent = `${range ? "zoomed" : "whole procedure"}: ${num.format(s.time.length)} points, ` +
      `${num.format(s.samples.reduce((a, b) => a + b, 0))} samples, one point per ${num.format(s.interval_ms)} ms`;
    const x = s.time.map(secs);
    TELEMETRY.forEach((t, i) => {
      const series = t.channels.map((c, j) => ({ label: t.labels[j], values: s.values[c] }));
      const plot = boxes[i].plot;
      if (plot) {
        plot.setData([x, ...series.map((v) => v.values)]);
        boxes[i].dataset.points = String(x.length);
      } else {
        timeChart(boxes[i], { x, series, yLabel: t.unit, height: 200, onZoom: (a, b) => zoom([a, b]) });
      }
    });
    return s;
  }

  function zoom(range) {
    const url = new URL(location.href);
    if (range) {
      url.searchParams.set("from", new Date(range[0] * 1000).toISOString());
      url.searchParams.set("to", new Date(range[1] * 1000).toISOString());
    } else {
      url.searchParams.delete("from");
      url.searchParams.delete("to");
    }
    history.replaceState(null, "", url);
    load(range).catch((err) => (status.textContent = err.message));
  }

  const from = Date.parse(ctx.params.get("from") || "");
  const to = Date.parse(ctx.params.get("to") || "");
  const initial = from < to ? [from / 1000, to / 1000] : null;

  return page(`Procedure ${id}`, null,
    card("Procedure", async (body) => {
      const p = await detail;
      const patient = ["patient_id", "patient_age", "patient_gender"].some((k) => p[k] != null);
      body.replaceChildren(facts([
        ["status", badge(p.status)],
        ["category", p.procedure_category],
        ["type", p.procedure_type],
        ["robot", link(`/robots/${encodeURIComponent(p.robot_id)}`, p.robot ? `${p.robot_id} (${p.robot.robot_model}, ${p.robot.facility_name || p.robot.facility_id})` : p.robot_id)],
        ["start", when(p.start_time)],
        ["end", when(p.end_time)],
        ["duration", p.duration_minutes == null ? "–" : `${num.format(p.duration_minutes)} min`],
        ["surgeon", p.surgeon_name || p.surgeon_id],
        ["complexity", fmt(p.complexity_score)],
        ...(patient ? [["patient", `${p.patient_id ?? "–"}, ${p.patient_age ?? "?"} y, ${p.patient_gender ?? "?"}`]] : [["patient", "not shown (needs a key with phi:read)"]]),
        ["telemetry", `${num.format(p.telemetry.sample_count)} samples`],
      ]));
    }, { ctx }),
    card("Outcome", async (body) => {
      const p = await detail;
      const o = p.outcome;
      if (!o) return body.replaceChildren(empty("No outcome recorded yet."));
      body.replaceChildren(facts([
        ["result", badge(o.success_status)],
        ["complications", o.complications.length ? o.complications.join(", ") : "none"],
        ["blood loss", o.blood_loss_ml == null ? "–" : `${num.format(o.blood_loss_ml)} ml`],
        ["hospital stay", o.hospital_stay_days == null ? "–" : `${num.format(o.hospital_stay_days)} days`],
        ["readmitted within 30 days", o.readmission_30day ? "yes" : "no"],
        ["patient satisfaction", fmt(o.patient_satisfaction_score)],
        ["recovery score", fmt(o.recovery_score)],
        ["follow-up required", o.follow_up_required ? "yes" : "no"],
        ...(o.surgeon_notes != null ? [["surgeon notes", o.surgeon_notes]] : []),
      ]));
    }, { ctx }),
    card("Telemetry", async (body) => {
      const p = await detail;
      if (!p.telemetry.sample_count) return body.replaceChildren(empty("No telemetry recorded for this procedure."));
      const reset = el("button", { type: "button", class: "secondary", onclick: () => zoom(null) }, "Whole procedure");
      body.replaceChildren(
        el("div", { class: "toolbar" }, reset, status, "Drag across a chart to zoom in (finer data is fetched); double-click or the button to go back."),
        ...TELEMETRY.map((t, i) => el("div", null, el("h2", null, t.title + (t.unit ? ` (${t.unit})` : "")), boxes[i])),
      );
      for (const b of boxes) b.addEventListener("dblclick", () => zoom(null));
      await load(initial);
    }, { ctx, wide: true }),
  );
}
