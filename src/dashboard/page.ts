/**
 * The dashboard's single page: plain HTML, CSS and JavaScript inline (no framework, no CDN:
 * clusters often run where there is no internet). It polls /api/state every second and
 * re-renders; the search box posts to /api/search. The script avoids template literals so
 * it can live in this TypeScript template string unescaped.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dfaiss dashboard</title>
<style>
  :root { --bg: #f6f7f9; --card: #fff; --ink: #1d2330; --muted: #6b7280; --line: #e5e7eb; --ok: #15803d; --okbg: #dcfce7; --bad: #b91c1c; --badbg: #fee2e2; --warn: #a16207; --warnbg: #fef9c3; --acc: #2563eb; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--ink); }
  header { display: flex; align-items: baseline; gap: 16px; padding: 14px 24px; background: #111827; color: #f9fafb; }
  header h1 { font-size: 18px; margin: 0; }
  header .meta { color: #9ca3af; font-size: 13px; }
  header .summary { margin-left: auto; font-weight: 600; }
  main { padding: 18px 24px; display: grid; gap: 18px; grid-template-columns: minmax(0, 3fr) minmax(320px, 2fr); }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
  .wide { grid-column: 1 / -1; }
  h2 { font-size: 15px; margin: 0 0 10px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
  .up, .TRAINED { background: var(--okbg); color: var(--ok); }
  .down { background: var(--badbg); color: var(--bad); }
  .TRAINING, .ADD, .NOT_TRAINED { background: var(--warnbg); color: var(--warn); }
  .indexes { display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); }
  .index { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; overflow-x: auto; }
  .index th, .index td { padding: 3px 6px; }
  .index h3 { margin: 0 0 6px; font-size: 15px; display: flex; gap: 8px; align-items: center; }
  .index .facts { color: var(--muted); font-size: 13px; margin-bottom: 6px; }
  .bar { height: 8px; background: var(--line); border-radius: 4px; overflow: hidden; margin: 4px 0 2px; }
  .bar > div { height: 100%; background: var(--acc); }
  .small { font-size: 12px; color: var(--muted); }
  .err { color: var(--bad); font-size: 12px; white-space: normal; max-width: 420px; }
  form { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 8px; }
  select, input, textarea, button { font: inherit; padding: 4px 8px; border: 1px solid #cbd5e1; border-radius: 5px; background: #fff; }
  textarea { width: 100%; height: 52px; font-family: ui-monospace, monospace; font-size: 12px; }
  button { background: var(--acc); color: #fff; border-color: var(--acc); cursor: pointer; }
  button.link { background: none; color: var(--acc); border: none; padding: 0; }
  td.meta { font-family: ui-monospace, monospace; font-size: 12px; white-space: normal; word-break: break-all; }
  .empty { color: var(--muted); font-style: italic; }
</style>
</head>
<body>
<header>
  <h1>dfaiss dashboard</h1>
  <span class="meta" id="discovery"></span>
  <span class="meta" id="updated">connecting…</span>
  <span class="summary" id="summary"></span>
</header>
<main>
  <section class="card wide">
    <h2>Servers</h2>
    <table>
      <thead><tr><th>Rank</th><th>Address</th><th>Status</th><th class="num">RSS</th><th class="num">Heap</th><th class="num">Connections</th><th class="num">QPS</th><th class="num">Search latency</th><th class="num">Uptime</th><th>Metrics</th></tr></thead>
      <tbody id="servers"><tr><td colspan="10" class="empty">waiting for the first poll</td></tr></tbody>
    </table>
  </section>
  <section class="card">
    <h2>Indexes</h2>
    <div class="indexes" id="indexes"><p class="empty">no index yet</p></div>
  </section>
  <section class="card">
    <h2>Search</h2>
    <form id="search-form" onsubmit="return false">
      <label>index <select id="search-index"></select></label>
      <label>k <input id="search-k" type="number" min="1" max="1000" value="5" style="width: 5em"></label>
      <button id="search-random" type="button" title="a random vector in [0, 1) of the index's dimension">Random query</button>
      <button id="search-vector-btn" type="button">Search this vector</button>
      <textarea id="search-vector" placeholder="or paste a query vector: [0.1, 0.2, ...] (the index's dimension)"></textarea>
    </form>
    <div id="search-status" class="small"></div>
    <table id="search-results"></table>
  </section>
</main>
<script>
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var esc = function (s) { return String(s).replace(/[&<>"']/g, function (c) { return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]; }); };
  var bytes = function (n) {
    if (n === undefined || n === null) return '-';
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + ' ' + u[i];
  };
  var num = function (n) { return n === undefined || n === null ? '-' : Number(n).toLocaleString('en-US'); };
  var dur = function (s) {
    if (s === undefined) return '-';
    if (s < 120) return Math.round(s) + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  };
  var lastHits = [];

  function renderServers(v) {
    if (v.servers.length === 0) {
      $('servers').innerHTML = '<tr><td colspan="10" class="empty">' + esc(v.discoveryError || 'the discovery file lists no server yet') + '</td></tr>';
      return;
    }
    $('servers').innerHTML = v.servers.map(function (s) {
      var status = s.up ? '<span class="badge up">up</span>' : '<span class="badge down">DOWN</span><div class="err">' + esc(s.error || '') + '</div>';
      var host = s.address.slice(0, s.address.lastIndexOf(':'));
      var metrics = s.metricsPort ? '<a href="http://' + esc(host === '0.0.0.0' ? location.hostname : host) + ':' + s.metricsPort + '/metrics">:' + s.metricsPort + '</a>' : '<span class="small">off</span>';
      return '<tr data-address="' + esc(s.address) + '" data-up="' + s.up + '">' +
        '<td>' + (s.rank === null ? '?' : s.rank) + '</td><td>' + esc(s.address) + '</td><td>' + status + '</td>' +
        '<td class="num">' + (s.up ? bytes(s.rssBytes) : '-') + '</td><td class="num">' + (s.up ? bytes(s.heapBytes) : '-') + '</td>' +
        '<td class="num">' + (s.up ? num(s.connections) : '-') + '</td>' +
        '<td class="num">' + (s.qps === undefined ? '-' : s.qps.toFixed(1)) + '</td>' +
        '<td class="num">' + (s.searchMs === undefined ? '-' : s.searchMs.toFixed(2) + ' ms') + '</td>' +
        '<td class="num">' + (s.up ? dur(s.uptimeSec) : '-') + '</td><td>' + (s.up ? metrics : '-') + '</td></tr>';
    }).join('');
  }

  function renderIndexes(v) {
    if (v.indexes.length === 0) { $('indexes').innerHTML = '<p class="empty">no index yet</p>'; return; }
    $('indexes').innerHTML = v.indexes.map(function (ix) {
      var bar = ix.progress === null ? '' : '<div class="bar"><div style="width:' + (ix.progress * 100).toFixed(1) + '%"></div></div>';
      var revoked = ix.shards.some(function (s) { return s.tombstoned > 0; });
      var shards = ix.shards.map(function (s) {
        return '<tr data-rank="' + s.rank + '"><td>' + (s.rank === null ? '?' : s.rank) + '</td><td><span class="badge ' + esc(s.state) + '">' + esc(s.state) + '</span></td>' +
          '<td class="num">' + num(s.ntotal) + '</td><td class="num">' + num(s.buffered) + '</td>' + (revoked ? '<td class="num">' + num(s.tombstoned) + '</td>' : '') + '</tr>';
      }).join('');
      return '<div class="index" data-index="' + esc(ix.id) + '" data-ntotal="' + ix.ntotal + '" data-state="' + esc(ix.state) + '">' +
        '<h3>' + esc(ix.id) + ' <span class="badge ' + esc(ix.state) + '">' + esc(ix.state) + '</span></h3>' +
        '<div class="facts">dim ' + ix.dim + ' · ' + esc(ix.metric) + ' · ntotal <b class="ntotal">' + num(ix.ntotal) + '</b> · buffered ' + num(ix.buffered) + (ix.trainNum ? ' · train_num ' + num(ix.trainNum) : '') + '</div>' +
        bar + '<div class="small">' + esc(ix.progressLabel) + '</div>' +
        '<table><thead><tr><th>Shard</th><th>State</th><th class="num">ntotal</th><th class="num">buffered</th>' + (revoked ? '<th class="num">revoked</th>' : '') + '</tr></thead><tbody>' + shards + '</tbody></table></div>';
    }).join('');
  }

  function renderSearchIndexes(v) {
    var sel = $('search-index'), current = sel.value;
    var ids = v.indexes.map(function (i) { return i.id; });
    if (ids.join('\\n') === Array.prototype.map.call(sel.options, function (o) { return o.value; }).join('\\n')) return;
    sel.innerHTML = ids.map(function (id) { return '<option value="' + esc(id) + '">' + esc(id) + '</option>'; }).join('');
    if (ids.indexOf(current) >= 0) sel.value = current;
  }

  function render(v) {
    $('discovery').textContent = v.discovery;
    $('updated').textContent = 'updated ' + new Date(v.time).toLocaleTimeString();
    var up = v.servers.filter(function (s) { return s.up; }).length;
    $('summary').textContent = up + '/' + (v.expected > 0 ? v.expected : v.servers.length) + ' servers up · ' + v.indexes.length + ' indexes';
    renderServers(v);
    renderIndexes(v);
    renderSearchIndexes(v);
  }

  function poll() {
    fetch('/api/state', { cache: 'no-store' }).then(function (r) { return r.json(); }).then(render, function (e) {
      $('updated').textContent = 'dashboard unreachable: ' + e.message;
    }).finally(function () { setTimeout(poll, 1000); });
  }

  function search(body) {
    $('search-status').textContent = 'searching…';
    fetch('/api/search', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
      .then(function (r) { return r.json(); })
      .then(function (res) {
        if (res.error) { $('search-status').innerHTML = '<span class="err">' + esc(res.error) + '</span>'; $('search-results').innerHTML = ''; return; }
        lastHits = res.hits;
        var partial = res.missing.length ? ' · PARTIAL: no answer from ' + res.missing.map(function (m) { return m.server; }).join(', ') : '';
        $('search-status').textContent = res.hits.length + ' hits from ' + res.servers + ' servers in ' + res.ms.toFixed(1) + ' ms' + partial;
        $('search-results').innerHTML = '<thead><tr><th>#</th><th class="num">Score</th><th>Metadata</th><th></th></tr></thead><tbody>' + res.hits.map(function (h, i) {
          return '<tr data-hit="' + i + '"><td>' + (i + 1) + '</td><td class="num">' + Number(h.score.toPrecision(6)) + '</td><td class="meta">' + esc(JSON.stringify(h.metadata)) + '</td>' +
            '<td>' + (h.embedding.length ? '<button class="link" data-similar="' + i + '" type="button">similar</button>' : '') + '</td></tr>';
        }).join('') + '</tbody>';
      }, function (e) { $('search-status').innerHTML = '<span class="err">' + esc(e.message) + '</span>'; });
  }

  var params = function () { return { index: $('search-index').value, k: Number($('search-k').value) || 5 }; };
  $('search-random').addEventListener('click', function () {
    var p = params(); p.seed = Math.floor(Math.random() * 1e9); search(p);
  });
  $('search-vector-btn').addEventListener('click', function () {
    var p = params();
    try { p.query = JSON.parse($('search-vector').value); } catch (e) { $('search-status').innerHTML = '<span class="err">the vector is not JSON: ' + esc(e.message) + '</span>'; return; }
    search(p);
  });
  $('search-results').addEventListener('click', function (ev) {
    var i = ev.target && ev.target.getAttribute && ev.target.getAttribute('data-similar');
    if (i === null || i === undefined) return;
    var p = params(); p.query = lastHits[Number(i)].embedding; search(p);
  });
  poll();
})();
</script>
</body>
</html>
`;
