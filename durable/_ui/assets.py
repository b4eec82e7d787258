"""The dashboard's style sheet and its one script, served by the dashboard itself.

No build step and nothing fetched from elsewhere (the pages work on a closed
network, and the Content-Security-Policy allows only these). The script does
one thing: it keeps the element marked ``data-live`` up to date by fetching its
own address again (with ``part=live``) every ``data-every`` milliseconds, until
the server says the page no longer changes (header ``X-Durable-Final``).
"""

from __future__ import annotations

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:0;
 background:#fafbfc}
header.top{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:18px;align-items:center}
header.top a{color:#fff;text-decoration:none;font-weight:600}header.top .store{color:#aab3c2}
main{margin:18px 24px}
form.filters{display:flex;flex-wrap:wrap;gap:10px;align-items:end;margin:0 0 12px}
form.filters label,form.action label{display:flex;flex-direction:column;font-size:12px;color:#5b6473}
input,select,textarea,button{font:inherit;padding:4px 8px;border:1px solid #c8ced8;border-radius:5px}
button{background:#3b7dd8;color:#fff;border-color:#3b7dd8;cursor:pointer}
button.danger{background:#d64545;border-color:#d64545}
.counts{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 12px}
.counts a{padding:2px 10px;border-radius:12px;background:#eef1f5;color:#1d2330;text-decoration:none}
.counts a.on{outline:2px solid #3b7dd8}.counts .n{font-weight:600;margin-left:4px}
table.runs{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
table.runs th,table.runs td{border-bottom:1px solid #e6e9ee;padding:5px 10px;text-align:left;
 vertical-align:top}
table.runs th{background:#f1f3f6}td.mono{font-family:ui-monospace,Menlo,Consolas,monospace}
.state{display:inline-block;padding:0 8px;border-radius:9px;color:#fff;font-size:12px;background:#6b7280}
.state.completed{background:#2e9d5b}.state.failed{background:#d64545}.state.running{background:#3b7dd8}
.state.waiting{background:#b7791f}.state.queued{background:#7c8799}.state.stalled{background:#a06800}
.state.corrupt,.state.unreadable{background:#a06800}
.pages{margin:12px 0;display:flex;gap:16px}
.notice{background:#e8f4ec;border:1px solid #2e9d5b;padding:8px 12px;border-radius:6px;margin:8px 0}
.problem{background:#fdecec;border:1px solid #d64545;padding:8px 12px;border-radius:6px;margin:8px 0;
 white-space:pre-wrap}
section.actions{display:flex;flex-wrap:wrap;gap:16px;margin:18px 0}
form.action{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px 12px;display:flex;
 flex-direction:column;gap:8px;min-width:260px}
form.action h3{margin:0;font-size:15px}
pre.locals{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px 12px;overflow:auto}
.dim{color:#6b7280}
"""

JS = """
"use strict";
(function () {
  const live = document.querySelector("[data-live]");
  if (!live) return;
  const every = Number(live.dataset.every) || 2000;
  let timer = null;
  let last = null;  // the last text fetched (innerHTML would not read back the same)
  async function refresh() {
    try {
      const response = await fetch(live.dataset.live, {credentials: "same-origin"});
      if (response.ok) {
        const text = await response.text();
        if (text !== last) { live.innerHTML = text; last = text; }  // server-rendered, escaped
        live.dataset.updated = String(Date.now());
        if (response.headers.get("X-Durable-Final")) { clearInterval(timer); return; }
      }
    } catch (error) { /* the server restarts: try again at the next tick */ }
  }
  timer = setInterval(refresh, every);
})();
"""
