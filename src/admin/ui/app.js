// ringway dashboard. Polls /internal/ui/data once a second (If-None-Match: an unchanged
// document answers 304) and turns consecutive totals into rates and percentiles here, so
// the proxy keeps no history for it. Every name shown comes from a backend or the config:
// it is only ever written as text (textContent), never as markup.
'use strict';
(() => {
  const PERIOD_MS = 1000;
  const HISTORY = 300; // chart points: five minutes at one a second
  const WINDOW_MS = 5000; // the endpoints table's rates and percentiles
  const KEY_STORE = 'ringway-api-key';

  const $ = (id) => document.getElementById(id);
  const series = { rps: [], eps: [], inflight: [], p50: [], p99: [], hit: [], miss: [], repin: [] };
  let samples = []; // {t, d}: the last few polls, oldest first
  let etag = null;
  let data = null;
  let shownTag = null; // the document the tables were last built from
  let polls = 0;
  let key = sessionStorage.getItem(KEY_STORE);
  let timer = null;
  let pending = false; // a poll is under way

  // --- numbers -------------------------------------------------------------------
  const fmt = (x, digits = 0) =>
    x == null || !isFinite(x) ? '–' : x.toLocaleString('en-US', { maximumFractionDigits: digits });
  const rateFmt = (x) => (x == null ? '–' : x >= 100 ? fmt(x) : fmt(x, 1));
  const msFmt = (s) => {
    if (s == null) return '–';
    if (s === Infinity) return '>30 s';
    const ms = s * 1000;
    return ms >= 1000 ? fmt(ms / 1000, 2) + ' s' : ms >= 10 ? fmt(ms) + ' ms' : fmt(ms, 2) + ' ms';
  };
  const ago = (unixMs) => {
    if (!unixMs) return 'never';
    const s = Math.max(0, Math.round((Date.now() - unixMs) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  };
  // A counter's growth; a smaller value means the process restarted.
  const grew = (now, before) => (now >= before ? now - before : now);

  // The q-quantile (seconds) of the observations between two cumulative bucket arrays,
  // interpolated inside its bucket; null when there were none.
  function quantile(bounds, now, before, q) {
    const delta = now.map((n, i) => grew(n, before ? before[i] : 0));
    const total = delta.reduce((a, b) => a + b, 0);
    if (total === 0) return null;
    const target = q * total;
    let seen = 0;
    for (let i = 0; i < delta.length; i++) {
      if (delta[i] === 0) continue;
      if (seen + delta[i] >= target) {
        if (i >= bounds.length) return Infinity;
        const lower = i === 0 ? 0 : bounds[i - 1];
        return lower + (bounds[i] - lower) * ((target - seen) / delta[i]);
      }
      seen += delta[i];
    }
    return Infinity;
  }

  // --- DOM helpers ---------------------------------------------------------------
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v == null) continue;
        if (k === 'class') e.className = v;
        else if (k === 'data') Object.assign(e.dataset, v);
        else if (k === 'text') e.textContent = v;
        else e.setAttribute(k, v);
      }
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }
  const badge = (cls, text) => el('span', { class: 'badge ' + cls, text });
  const setText = (id, text) => {
    const e = $(id);
    if (e.textContent !== text) e.textContent = text;
  };

  // --- charts --------------------------------------------------------------------
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  function niceMax(x) {
    if (!(x > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 2.5, 5, 10]) if (x <= m * p) return m * p;
    return 10 * p;
  }

  // Draws lines (arrays of numbers or null, newest last) right-aligned on a canvas.
  function chart(id, lines, unit) {
    const canvas = $(id);
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (w === 0 || h === 0) return;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    let max = 0;
    for (const line of lines) for (const v of line) if (v != null && isFinite(v)) max = Math.max(max, v);
    max = niceMax(max);
    g.strokeStyle = cssVar('--line');
    g.lineWidth = 1;
    g.beginPath();
    g.moveTo(0, h - 0.5);
    g.lineTo(w, h - 0.5);
    g.stroke();
    g.fillStyle = cssVar('--muted');
    g.font = '10px system-ui, sans-serif';
    g.textBaseline = 'top';
    g.fillText(unit === 's' ? msFmt(max) : fmt(max, max < 10 ? 1 : 0), 2, 1);
    // The last minute at least, growing to five: a fresh page's lines are not specks.
    const points = Math.min(HISTORY, Math.max(60, ...lines.map((l) => l.length)));
    const step = w / (points - 1);
    lines.forEach((line, k) => {
      g.strokeStyle = cssVar('--k' + k);
      g.lineWidth = 1.5;
      g.beginPath();
      let drawing = false;
      const offset = points - line.length;
      line.forEach((v, i) => {
        if (v == null || !isFinite(v)) {
          drawing = false;
          return;
        }
        const x = (offset + i) * step;
        const y = h - 1 - (Math.min(v, max) / max) * (h - 14);
        if (drawing) g.lineTo(x, y);
        else g.moveTo(x, y);
        drawing = true;
      });
      g.stroke();
    });
  }

  function drawCharts() {
    chart('c-rps', [series.rps]);
    chart('c-eps', [series.eps]);
    chart('c-inflight', [series.inflight]);
    chart('c-ttfb', [series.p50, series.p99], 's');
    chart('c-sticky', [series.hit, series.miss, series.repin]);
  }

  const push = (name, v) => {
    const s = series[name];
    s.push(v);
    if (s.length > HISTORY) s.shift();
  };

  // --- one poll ------------------------------------------------------------------
  function record(d) {
    const t = performance.now();
    const prev = samples[samples.length - 1];
    samples.push({ t, d });
    while (samples.length > 2 && t - samples[1].t >= WINDOW_MS) samples.shift();
    const f = d.fleet;
    push('inflight', f.in_flight);
    if (!prev) return;
    const dt = (t - prev.t) / 1000;
    const p = prev.d.fleet;
    const rate = (now, before) => grew(now, before) / dt;
    push('rps', rate(f.requests, p.requests));
    push('eps', rate(f.errors, p.errors));
    push('p50', quantile(d.buckets, f.ttfb, p.ttfb, 0.5));
    push('p99', quantile(d.buckets, f.ttfb, p.ttfb, 0.99));
    push('hit', rate(f.sticky.hit, p.sticky.hit));
    push('miss', rate(f.sticky.miss, p.sticky.miss));
    push('repin', rate(f.sticky.repin, p.sticky.repin));
  }

  const last = (name) => {
    const s = series[name];
    return s.length ? s[s.length - 1] : null;
  };

  function renderOverview(d) {
    setText('about', `v${d.version} · ${d.shards} shard${d.shards === 1 ? '' : 's'} on ${d.driver} · ${d.balancer}`);
    setText('v-rps', rateFmt(last('rps')));
    setText('v-eps', rateFmt(last('eps')));
    setText('v-inflight', fmt(d.fleet.in_flight));
    setText('v-p50', msFmt(last('p50')));
    setText('v-p99', msFmt(last('p99')));
    setText('v-hit', rateFmt(last('hit')));
    setText('v-miss', rateFmt(last('miss')));
    setText('v-repin', rateFmt(last('repin')));
    setText('total-requests', fmt(d.fleet.requests));
    setText('total-failovers', fmt(d.fleet.failovers));
    setText('total-errors', fmt(d.fleet.errors));
    setText('total-client-errors', fmt(d.fleet.client_errors));
    setText('sticky-state', d.sticky ? 'on' : 'off ([sticky] enabled = false)');
    const span = series.rps.length;
    setText('window', span > 1 ? `last ${span >= 60 ? Math.round(span / 60) + ' min' : span + ' s'}` : '');
  }

  function renderEndpoints(d) {
    const base = samples[0];
    const dt = samples.length > 1 ? (samples[samples.length - 1].t - base.t) / 1000 : 0;
    const before = new Map(base && dt > 0 ? base.d.endpoints.map((e) => [e.name, e]) : []);
    const groupsShown = d.endpoints.some((e) => e.groups);
    document.querySelectorAll('.groups-col').forEach((c) => (c.hidden = !groupsShown));
    const rows = d.endpoints.map((e) => {
      const b = before.get(e.name);
      const rate = (k) => (b ? grew(e[k], b[k]) / dt : null);
      const p50 = b ? quantile(d.buckets, e.ttfb, b.ttfb, 0.5) : null;
      const p99 = b ? quantile(d.buckets, e.ttfb, b.ttfb, 0.99) : null;
      const open = e.status === 'circuit-open';
      const check = e.check_at
        ? `${ago(e.check_at)} · ${e.check_status || 'no answer'}${e.check_status ? ' in ' + fmt(e.check_ms, 1) + ' ms' : ''}`
        : 'not yet';
      const cells = [
        el('td', null, el('strong', { text: e.name }), el('span', { class: 'url', text: `${e.url} · ${e.type} · priority ${e.priority}` })),
        el('td', { class: 'state' }, badge(e.status, e.status), e.changed_at ? el('span', { class: 'url', text: 'since ' + ago(e.changed_at) }) : null),
        el('td', null, badge(open ? 'open' : 'closed', open ? 'open' : 'closed'), e.failures ? el('span', { class: 'url', text: `${e.failures} failed in a row` }) : null),
        el('td', { class: 'n', text: fmt(e.in_flight) + (e.queued ? ` (+${fmt(e.queued)} queued)` : '') }),
        el('td', { class: 'n', text: rateFmt(rate('requests')) }),
        el('td', { class: 'n', text: rateFmt(rate('errors')) }),
        el('td', { class: 'n', text: `${msFmt(p50)} / ${msFmt(p99)}` }),
        el('td', { text: check }),
        el('td', { class: 'n', text: `${e.models == null ? '?' : fmt(e.models)} / ${e.loaded == null ? '–' : fmt(e.loaded)}` }),
      ];
      if (groupsShown) {
        const groups = Array.isArray(e.groups) && e.groups.length ? e.groups.join(', ') : '–';
        cells.push(el('td', { class: 'wrap', text: groups }));
      }
      return el('tr', { data: { endpoint: e.name, status: e.status } }, ...cells);
    });
    $('endpoint-rows').replaceChildren(...rows);
    const up = d.endpoints.filter((e) => e.status === 'healthy').length;
    setText('endpoint-summary', `${up} of ${d.endpoints.length} in rotation`);
  }

  function renderModels(d) {
    const names = d.endpoints.map((e) => e.name);
    const offline = new Set(d.endpoints.map((e, i) => (e.status === 'offline' ? i : -1)));
    const filter = $('model-filter').value.trim().toLowerCase();
    const shown = d.models.filter(
      (m) => !filter || m.name.toLowerCase().includes(filter) || m.aliases.some((a) => a.toLowerCase().includes(filter)),
    );
    const list = (idx) => (idx.length ? idx.map((i) => names[i] + (offline.has(i) ? ' (offline)' : '')).join(', ') : '–');
    const rows = shown.slice(0, 500).map((m) =>
      el(
        'tr',
        { data: { model: m.name } },
        el('td', { text: m.name }),
        el('td', { class: 'wrap', text: m.aliases.length ? m.aliases.join(', ') : '–' }),
        el('td', { class: 'wrap', text: list(m.on) }),
        el('td', { class: 'wrap', text: list(m.loaded) }),
      ),
    );
    if (rows.length === 0) rows.push(el('tr', null, el('td', { colspan: '4', class: 'muted', text: d.models.length ? 'no model matches' : 'no model lists read yet' })));
    $('model-rows').replaceChildren(...rows);
    const aliases = new Set(d.models.flatMap((m) => m.aliases)).size;
    setText('model-summary', `${d.models.length} in the catalogue${aliases ? `, ${aliases} alias${aliases === 1 ? '' : 'es'}` : ''}${shown.length > 500 ? ' (first 500 shown)' : ''}`);
  }

  function renderEvents(d) {
    const items = d.events.map((e) =>
      el(
        'li',
        { data: { kind: e.kind } },
        el('time', { datetime: new Date(e.at).toISOString(), text: new Date(e.at).toLocaleTimeString() }),
        badge(e.kind, e.kind.replace('_', ' ')),
        e.endpoint ? el('strong', { text: e.endpoint }) : null,
        el('span', { text: e.text }),
      ),
    );
    if (items.length === 0) items.push(el('li', { class: 'empty', text: 'nothing yet' }));
    $('event-list').replaceChildren(...items);
  }

  function render() {
    if (!data) return;
    renderOverview(data);
    renderEndpoints(data); // rates change every poll, and so do the "ago" times
    if (shownTag !== etag) {
      renderModels(data);
      renderEvents(data);
      shownTag = etag;
    }
    drawCharts();
  }

  function setLive(state, text) {
    const e = $('live');
    e.dataset.state = state;
    setText('live', text);
  }

  async function poll() {
    const headers = {};
    if (etag && data) headers['If-None-Match'] = etag;
    if (key) headers['X-Api-Key'] = key;
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), 3000);
    let r;
    try {
      r = await fetch('/internal/ui/data', { cache: 'no-store', headers, signal: abort.signal });
    } finally {
      clearTimeout(timeout);
    }
    if (r.status === 401) {
      $('key-form').hidden = false;
      setLive('stale', 'API key needed');
      return;
    }
    if (r.status === 304) {
      record(data);
    } else if (r.ok) {
      data = await r.json();
      etag = r.headers.get('ETag');
      record(data);
    } else {
      throw new Error('answered ' + r.status);
    }
    polls++;
    document.body.dataset.polls = String(polls);
    setLive('live', 'live');
    render();
  }

  async function tick() {
    timer = null;
    if (pending) return;
    pending = true;
    const started = performance.now();
    try {
      await poll();
    } catch (e) {
      setLive('stale', 'stale: ' + (e.name === 'AbortError' ? 'no answer' : e.message || 'cannot reach ringway'));
    } finally {
      pending = false;
    }
    if (document.visibilityState !== 'hidden') {
      timer = setTimeout(tick, Math.max(100, PERIOD_MS - (performance.now() - started)));
    }
  }

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'hidden' && timer == null && !pending) tick();
  });
  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    key = $('key').value.trim() || null;
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
    $('key-form').hidden = true;
    if (timer != null) clearTimeout(timer);
    tick();
  });
  $('model-filter').addEventListener('input', () => data && renderModels(data));
  window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', drawCharts);
  window.addEventListener('resize', drawCharts);
  tick();
})();
