// imdsguard UI: hand-written, no framework, no build step. It uses only the documented JSON API
// (docs/ui.md): /api/flows/stream (server-sent events), /api/flows, /api/map, /api/imds, /api/status.
'use strict';
(() => {
  /** Rows kept in the flow table: the DOM never holds more. */
  const MAX_ROWS = 500;
  const POLL_MS = 2000;
  const STATUS_MS = 5000;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (sel, root = document) => root.querySelector(sel);

  /** Builds an element: attrs may hold `class`, `text`, `data` (dataset) and plain attributes. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }
  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }
  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') node.textContent = v;
      else if (k === 'data') Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
  }

  const state = {
    view: 'flows',
    paused: false,
    source: null, // the EventSource
    next: null, // the sequence number to resume from
    queue: [], // entries waiting for the next frame
    frame: 0,
    entries: new Map(), // seq -> entry, exactly the rows in the table
    notShown: 0,
    current: null, // the row that holds the table's tab stop
    detailSeq: null,
    mapKey: '',
    mapSelected: null,
    mapCurrent: null, // the node that holds the map's tab stop
    imdsKey: '',
    retry: 0,
  };

  // ---------------------------------------------------------------- filters

  const form = $('#filters');
  const fNamespace = $('#f-namespace');
  const fVerdict = $('#f-verdict');
  const fType = $('#f-type');
  const fText = $('#f-q');
  const fImds = $('#f-imds');

  /** The flow search as `hubble observe` filter flags plus `q` and `imds` (docs/ui.md). */
  function flowParams() {
    const p = new URLSearchParams();
    if (fNamespace.value) p.set('namespace', fNamespace.value);
    if (fVerdict.value) p.set('verdict', fVerdict.value);
    if (fType.value) p.set('type', fType.value);
    if (fText.value.trim()) p.set('q', fText.value.trim());
    if (fImds.checked) p.set('imds', 'true');
    return p;
  }
  function viewParams() {
    const p = new URLSearchParams();
    if (fNamespace.value) p.set('namespace', fNamespace.value);
    return p;
  }

  function saveLocation() {
    const p = flowParams();
    p.set('view', state.view);
    history.replaceState(null, '', '#' + p.toString());
  }
  function loadLocation() {
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.get('namespace')) ensureOption(fNamespace, p.get('namespace'));
    fNamespace.value = p.get('namespace') || '';
    fVerdict.value = p.get('verdict') || '';
    fType.value = p.get('type') || '';
    fText.value = p.get('q') || '';
    fImds.checked = p.get('imds') === 'true';
    const view = p.get('view');
    if (view === 'map' || view === 'imds' || view === 'flows') state.view = view;
  }
  function ensureOption(select, value) {
    if (![...select.options].some((o) => o.value === value)) select.append(el('option', { value, text: value }));
  }

  let textTimer = 0;
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    applyFilters();
  });
  form.addEventListener('change', (ev) => {
    if (ev.target !== fText) applyFilters();
  });
  fText.addEventListener('input', () => {
    clearTimeout(textTimer);
    textTimer = setTimeout(applyFilters, 250);
  });

  function applyFilters() {
    clearTimeout(textTimer);
    announce('Filters applied');
    saveLocation();
    clearTable();
    state.next = null;
    if (state.paused) loadFlowsOnce();
    else connect(null);
    state.mapKey = '';
    state.imdsKey = '';
    refreshView();
  }

  // ---------------------------------------------------------------- the live flow table

  const tbody = $('#flows tbody');
  $('#flow-cap').textContent = String(MAX_ROWS);

  function setFlowState(text) {
    $('#flow-state').textContent = text;
  }
  function announce(text) {
    $('#announce').textContent = text;
  }

  function disconnect() {
    if (state.source) {
      state.source.close();
      state.source = null;
    }
  }

  /** Opens the stream: from `from` (after a pause) or with the newest MAX_ROWS matching flows. */
  function connect(from) {
    disconnect();
    const p = flowParams();
    if (from !== null && from !== undefined) p.set('from', String(from));
    else p.set('last', String(MAX_ROWS));
    const source = new EventSource('/api/flows/stream?' + p.toString());
    state.source = source;
    setFlowState('connecting…');
    source.addEventListener('open', () => {
      state.retry = 0;
      setFlowState('live');
    });
    source.addEventListener('flows', (ev) => {
      let batch;
      try {
        batch = JSON.parse(ev.data);
      } catch {
        return;
      }
      state.next = batch.next;
      addNotShown((batch.lost || 0) + (batch.dropped || 0));
      enqueue(batch.flows || []);
    });
    source.addEventListener('error', () => {
      if (source !== state.source) return;
      if (source.readyState === EventSource.CLOSED) {
        setFlowState('disconnected');
        explainStreamError(p);
      } else {
        setFlowState('reconnecting…');
      }
    });
  }

  /** The stream failed for good (EventSource does not say why): ask the same question once. */
  async function explainStreamError(p) {
    let message = 'the agent is not answering';
    try {
      const resp = await fetch('/api/flows?' + p.toString());
      if (!resp.ok) message = (await resp.json()).error || resp.statusText;
      else message = 'the live stream was refused (too many open tabs?)';
    } catch {
      // keep the default message
    }
    setFlowState('disconnected: ' + message + '; retrying');
    announce('Live flows disconnected: ' + message);
    state.retry = Math.min(state.retry + 1, 6);
    setTimeout(() => {
      if (!state.paused && (!state.source || state.source.readyState === EventSource.CLOSED)) connect(state.next);
    }, 1000 * 2 ** state.retry);
  }

  /** Paused, or filters changed while paused: the current matching flows, once. */
  async function loadFlowsOnce() {
    const p = flowParams();
    p.set('last', String(MAX_ROWS));
    try {
      const resp = await fetch('/api/flows?' + p.toString());
      const page = await resp.json();
      if (!resp.ok) throw new Error(page.error || resp.statusText);
      state.next = page.next;
      enqueue(page.flows);
    } catch (e) {
      announce('Could not load flows: ' + e.message);
    }
  }

  function addNotShown(n) {
    if (!n) return;
    state.notShown += n;
    $('#flow-lost').textContent = state.notShown.toLocaleString();
  }

  function enqueue(flows) {
    for (const f of flows) state.queue.push(f);
    // Only the newest rows can ever be shown; never let the queue outgrow the table.
    if (state.queue.length > MAX_ROWS) addNotShown(state.queue.splice(0, state.queue.length - MAX_ROWS).length);
    if (!state.frame) state.frame = requestAnimationFrame(render);
  }

  function render() {
    state.frame = 0;
    const items = state.queue;
    state.queue = [];
    if (!items.length) return;
    const frag = document.createDocumentFragment();
    // A few new rows are flashed; a flood is not (it would only repaint the table all the time).
    // Rows drawn while another view shows are not flashed either: they would all flash at once
    // when the table shows again.
    const flash = items.length <= 20 && state.view === 'flows' && !document.hidden;
    for (let i = items.length - 1; i >= 0; i--) frag.append(rowFor(items[i], flash));
    tbody.insertBefore(frag, tbody.firstChild);
    let refocus = false;
    while (tbody.rows.length > MAX_ROWS) {
      const last = tbody.lastElementChild;
      const seq = Number(last.dataset.seq);
      state.entries.delete(seq);
      if (last === state.current) {
        refocus = document.activeElement === last;
        state.current = null;
      }
      last.remove();
    }
    if (refocus) setCurrent(tbody.lastElementChild, true);
    // Tabbing into the table lands on the newest flow, unless someone is reading the table.
    else if (tbody.rows.length && !tbody.contains(document.activeElement)) setCurrent(tbody.firstElementChild, false);
    $('#flow-count').textContent = String(tbody.rows.length);
    $('#flows-empty').hidden = tbody.rows.length > 0;
  }

  function fmtTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  function fmtDateTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
  }

  function rowFor(entry, flash) {
    const r = entry.row;
    state.entries.set(entry.seq, entry);
    const dst = r.imds ? [el('span', { class: 'imds-mark', 'aria-hidden': 'true', text: '◆ ' }), r.destination] : [r.destination];
    return el(
      'tr',
      { data: { seq: entry.seq }, tabindex: '-1', 'aria-selected': 'false', class: flash ? 'new' : null },
      el('td', { class: 'c-time', title: r.time || '', text: fmtTime(r.time) }),
      el('td', { class: 'c-src', title: `${r.source} ${r.source_ip} identity ${r.source_identity}`, text: r.source }),
      el('td', { class: 'c-dst', title: `${r.destination} ${r.destination_ip} identity ${r.destination_identity}` }, ...dst),
      el('td', { class: 'c-port', text: r.port }),
      el('td', { class: 'c-l7', title: r.l7, text: r.l7 }),
      el('td', { class: 'c-verdict' }, el('span', { class: 'verdict ' + r.verdict, title: r.drop_reason || r.policy, text: r.verdict })),
      el('td', { class: 'c-type', text: r.type }),
    );
  }

  function clearTable() {
    tbody.replaceChildren();
    state.entries.clear();
    state.queue = [];
    state.current = null;
    state.notShown = 0;
    $('#flow-lost').textContent = '0';
    $('#flow-count').textContent = '0';
    $('#flows-empty').hidden = false;
    closeDetail(false);
  }

  /** Moves the table's single tab stop to `row`. */
  function setCurrent(row, focus) {
    if (!row) return;
    if (state.current && state.current !== row) state.current.tabIndex = -1;
    state.current = row;
    row.tabIndex = 0;
    if (focus) row.focus();
  }

  // A row's arrival is shown once; without this, showing the tab again would replay it.
  tbody.addEventListener('animationend', (ev) => ev.target.classList.remove('new'));
  tbody.addEventListener('click', (ev) => {
    const row = ev.target.closest('tr');
    if (!row) return;
    setCurrent(row, true);
    showDetail(Number(row.dataset.seq), false);
  });
  tbody.addEventListener('focusin', (ev) => {
    const row = ev.target.closest('tr');
    if (row && row !== state.current) setCurrent(row, false);
  });
  tbody.addEventListener('keydown', (ev) => {
    const row = ev.target.closest('tr');
    if (!row || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    let to = null;
    switch (ev.key) {
      case 'ArrowDown':
      case 'j':
        to = row.nextElementSibling;
        break;
      case 'ArrowUp':
      case 'k':
        to = row.previousElementSibling;
        break;
      case 'Home':
        to = tbody.firstElementChild;
        break;
      case 'End':
        to = tbody.lastElementChild;
        break;
      case 'PageDown':
        to = tbody.rows[Math.min(row.sectionRowIndex + 10, tbody.rows.length - 1)];
        break;
      case 'PageUp':
        to = tbody.rows[Math.max(row.sectionRowIndex - 10, 0)];
        break;
      case 'Enter':
      case ' ':
        ev.preventDefault();
        showDetail(Number(row.dataset.seq), true);
        return;
      default:
        return;
    }
    ev.preventDefault();
    if (to) {
      setCurrent(to, true);
      if (state.detailSeq !== null) showDetail(Number(to.dataset.seq), false);
    }
  });

  const DETAIL_FIELDS = [
    ['Time', (r) => r.time],
    ['Source', (r) => `${r.source} (${r.source_ip || 'no IP'}, identity ${r.source_identity})`],
    ['Destination', (r) => `${r.destination} (${r.destination_ip || 'no IP'}, identity ${r.destination_identity})`],
    // Who in the pod: imdsguard's process information, present only when the flow carries it.
    // The process name is whatever the process called itself: shown as text, like every value.
    ['Container', (r) => r.container],
    ['Process', (r) => processText(r.process, r.pid ? [r.pid] : [], [])],
    ['UID', (r) => (r.uid === undefined || r.uid === null ? '' : String(r.uid))],
    ['Socket cookie', (r) => r.socket_cookie],
    ['cgroup ID', (r) => r.cgroup_id],
    ['Port', (r) => r.port],
    ['Verdict', (r) => r.verdict],
    ['Drop reason', (r) => r.drop_reason],
    ['Policy', (r) => r.policy],
    ['Type', (r) => r.type],
    ['L7', (r) => r.l7],
    ['Summary', (r) => r.summary],
  ];

  /** `envoy (pid 4242, uid 1337)`; empty when nothing is known. */
  function processText(name, pids, uids) {
    const ids = [];
    if (pids && pids.length) ids.push((pids.length === 1 ? 'pid ' : 'pids ') + pids.join(', '));
    if (uids && uids.length) ids.push((uids.length === 1 ? 'uid ' : 'uids ') + uids.join(', '));
    if (!name && !ids.length) return '';
    return (name || 'unknown process') + (ids.length ? ` (${ids.join('; ')})` : '');
  }

  function showDetail(seq, focus) {
    const entry = state.entries.get(seq);
    if (!entry) return;
    for (const tr of tbody.querySelectorAll('tr[aria-selected="true"]')) tr.setAttribute('aria-selected', 'false');
    const row = tbody.querySelector(`tr[data-seq="${seq}"]`);
    if (row) row.setAttribute('aria-selected', 'true');
    state.detailSeq = seq;
    const dl = $('#detail-fields');
    dl.replaceChildren();
    for (const [name, get] of DETAIL_FIELDS) {
      const value = get(entry.row);
      if (value) dl.append(el('dt', { text: name }), el('dd', { text: value }));
    }
    dl.append(el('dt', { text: 'Node' }), el('dd', { text: entry.node_name }), el('dt', { text: 'Sequence' }), el('dd', { text: String(entry.seq) }));
    $('#detail-json').textContent = JSON.stringify(entry.flow, null, 2);
    $('#detail-title').textContent = `Flow ${entry.row.source} → ${entry.row.destination}`;
    const panel = $('#detail');
    panel.hidden = false;
    if (focus) $('#detail-title').focus();
  }

  function closeDetail(refocus) {
    const panel = $('#detail');
    if (panel.hidden) return;
    panel.hidden = true;
    state.detailSeq = null;
    for (const tr of tbody.querySelectorAll('tr[aria-selected="true"]')) tr.setAttribute('aria-selected', 'false');
    if (refocus && state.current) state.current.focus();
  }
  $('#detail-close').addEventListener('click', () => closeDetail(true));

  // ---------------------------------------------------------------- pause, resume, clear

  const pauseButton = $('#pause');
  function setPaused(paused) {
    state.paused = paused;
    pauseButton.setAttribute('aria-pressed', String(paused));
    pauseButton.firstChild.textContent = paused ? 'Resume ' : 'Pause ';
    if (paused) {
      disconnect();
      setFlowState('paused');
      announce('Paused: the table, map and IMDS view stop updating');
    } else {
      connect(state.next);
      refreshView();
      announce('Resumed');
    }
  }
  pauseButton.addEventListener('click', () => setPaused(!state.paused));
  $('#clear').addEventListener('click', () => {
    clearTable();
    announce('Table cleared');
  });

  // ---------------------------------------------------------------- views and keys

  const tabs = [...document.querySelectorAll('[role="tab"]')];
  function showView(view, focusTab) {
    state.view = view;
    for (const tab of tabs) {
      const on = tab.dataset.view === view;
      tab.setAttribute('aria-selected', String(on));
      tab.tabIndex = on ? 0 : -1;
      $('#' + tab.getAttribute('aria-controls')).hidden = !on;
      if (on && focusTab) tab.focus();
    }
    document.title = 'imdsguard: ' + { flows: 'flows', map: 'service map', imds: 'IMDS' }[view];
    saveLocation();
    refreshView();
  }
  for (const tab of tabs) {
    tab.addEventListener('click', () => showView(tab.dataset.view, false));
    tab.addEventListener('keydown', (ev) => {
      const i = tabs.indexOf(tab);
      let to = null;
      if (ev.key === 'ArrowRight') to = tabs[(i + 1) % tabs.length];
      else if (ev.key === 'ArrowLeft') to = tabs[(i + tabs.length - 1) % tabs.length];
      else if (ev.key === 'Home') to = tabs[0];
      else if (ev.key === 'End') to = tabs[tabs.length - 1];
      if (!to) return;
      ev.preventDefault();
      showView(to.dataset.view, true);
    });
  }

  const help = $('#help');
  $('#help-button').addEventListener('click', () => help.showModal());

  document.addEventListener('keydown', (ev) => {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const t = ev.target;
    const typing = t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement;
    if (ev.key === 'Escape') {
      if (help.open) return; // the dialog closes itself
      if (typing && t === fText && fText.value) return; // the search box clears itself
      if (!$('#detail').hidden) {
        closeDetail(true);
        ev.preventDefault();
      } else if (state.mapSelected) {
        selectNode(null);
        ev.preventDefault();
      }
      return;
    }
    if (typing || help.open) return;
    switch (ev.key) {
      case '/':
        ev.preventDefault();
        fText.focus();
        fText.select();
        break;
      case 'p':
        setPaused(!state.paused);
        break;
      case '?':
        help.showModal();
        break;
      case '1':
        showView('flows', true);
        break;
      case '2':
        showView('map', true);
        break;
      case '3':
        showView('imds', true);
        break;
      default:
    }
  });

  // ---------------------------------------------------------------- polling the map and IMDS view

  async function getJson(url) {
    const resp = await fetch(url);
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || resp.statusText);
    return body;
  }

  let refreshing = false;
  async function refreshView() {
    if (refreshing || document.hidden) return;
    refreshing = true;
    try {
      if (state.view === 'map') drawMap(await getJson('/api/map?' + viewParams()));
      else if (state.view === 'imds') drawImds(await getJson('/api/imds?' + viewParams()));
    } catch (e) {
      announce('Could not refresh: ' + e.message);
    } finally {
      refreshing = false;
    }
  }
  setInterval(() => {
    if (!state.paused) refreshView();
  }, POLL_MS);

  async function loadStatus() {
    try {
      const s = await getJson('/api/status');
      $('#node-name').textContent = s.node_name;
      showAuditSummary(s.audit);
      for (const ns of s.namespaces) ensureOption(fNamespace, ns);
    } catch {
      // the flow state line already says when the agent is gone
    }
  }
  setInterval(loadStatus, STATUS_MS);

  /** What the agent has in audit mode now, even before any flow was audited. */
  function showAuditSummary(audit) {
    const box = $('#audit-summary');
    const pods = audit ? audit.pods.length : 0;
    const policies = audit ? audit.policies.length : 0;
    if (!audit || (!audit.all && !pods && !policies)) {
      box.hidden = true;
      return;
    }
    const parts = [];
    if (audit.all) parts.push('every pod (--policy-audit-mode)');
    else if (pods) parts.push(`${pods} ${pods === 1 ? 'pod' : 'pods'}`);
    if (policies) parts.push(`${policies} ${policies === 1 ? 'policy' : 'policies'}`);
    box.textContent = 'Audit mode: ' + parts.join(', ');
    box.title = 'What these would deny passes and is reported as AUDIT.\n' +
      [...audit.pods, ...audit.policies.map((p) => `${p.kind} ${p.namespace ? p.namespace + '/' : ''}${p.name}`)].join('\n');
    box.hidden = false;
  }

  // ---------------------------------------------------------------- the service map

  const mapWrap = $('#map-wrap');
  const GROUP_ORDER = { namespace: 0, metadata: 1, host: 2, cluster: 3, cidr: 4, world: 5 };
  const NODE_W = 240;
  const NODE_H = 26;
  const GAP = 6;
  const PAD = 10;
  const TITLE_H = 24;
  const LANE = 160; // the least room for the edges between the two columns

  let mapData = null;

  function nodeLabel(n) {
    return n.kind === 'workload' ? `${n.label}` : n.label;
  }
  function short(text, max) {
    return text.length > max ? text.slice(0, max - 1) + '…' : text;
  }
  function verdictText(v) {
    return Object.entries(v)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
  }

  /** Lays out the groups in two columns: the namespaces' workloads on the left, everything else
   * (metadata first, then host, cluster, CIDR, world) on the right, so that every call to IMDS is
   * one curve from left to right that crosses no box. */
  function layout(data, width) {
    const groups = new Map();
    for (const g of data.groups) groups.set(g.id, { ...g, nodes: [] });
    for (const n of data.nodes) {
      let g = groups.get(n.group);
      if (!g) {
        g = { id: n.group, kind: 'world', nodes: [] };
        groups.set(n.group, g);
      }
      g.nodes.push(n);
    }
    // Natural order: app-2 before app-10.
    const natural = new Intl.Collator(undefined, { numeric: true });
    for (const g of groups.values()) g.nodes.sort((a, b) => natural.compare(a.label, b.label));
    const inside = [...groups.values()].filter((g) => g.kind === 'namespace');
    const outside = [...groups.values()]
      .filter((g) => g.kind !== 'namespace')
      .sort((a, b) => (GROUP_ORDER[a.kind] ?? 9) - (GROUP_ORDER[b.kind] ?? 9) || a.id.localeCompare(b.id));
    const colW = NODE_W + 2 * PAD;
    const lane = Math.max(LANE, Math.min(420, width - 2 * colW - 120));
    const boxes = new Map();
    const groupBoxes = [];
    const column = (list, x) => {
      let y = 20;
      for (const g of list) {
        const h = TITLE_H + g.nodes.length * (NODE_H + GAP) + PAD;
        groupBoxes.push({ g, x, y, w: colW, h });
        g.nodes.forEach((n, i) => boxes.set(n.id, { x: x + PAD, y: y + TITLE_H + i * (NODE_H + GAP), w: NODE_W, h: NODE_H, n }));
        y += h + 20;
      }
      return y;
    };
    const insideH = column(inside, 20);
    const outsideX = inside.length ? 20 + colW + lane : 20;
    const outsideH = column(outside, outsideX);
    // Room on the right for the loops of edges between nodes of the same column.
    return { boxes, groupBoxes, width: outsideX + colW + 90, height: Math.max(insideH, outsideH) };
  }

  function edgePath(a, b) {
    const sy = a.y + a.h / 2;
    const ty = b.y + b.h / 2;
    if (b.x >= a.x + a.w) {
      const sx = a.x + a.w;
      const tx = b.x - 2;
      const dx = Math.max(40, (tx - sx) / 2);
      return { d: `M${sx},${sy} C${sx + dx},${sy} ${tx - dx},${ty} ${tx},${ty}`, mx: (sx + tx) / 2, my: (sy + ty) / 2 };
    }
    if (b.x + b.w <= a.x) {
      const sx = a.x;
      const tx = b.x + b.w + 2;
      const dx = Math.max(40, (sx - tx) / 2);
      return { d: `M${sx},${sy} C${sx - dx},${sy} ${tx + dx},${ty} ${tx},${ty}`, mx: (sx + tx) / 2, my: (sy + ty) / 2 };
    }
    // Same column: loop out on the right.
    const sx = a.x + a.w;
    const tx = b.x + b.w + 2;
    const bulge = 30 + Math.abs(ty - sy) / 4;
    return { d: `M${sx},${sy} C${sx + bulge},${sy} ${tx + bulge},${ty} ${tx},${ty}`, mx: sx + bulge * 0.75, my: (sy + ty) / 2 };
  }

  function drawMap(data) {
    const key = JSON.stringify([data.nodes, data.edges, mapWrap.clientWidth]);
    $('#map-stats').textContent =
      `${data.nodes.length} nodes, ${data.edges.length} connections · ${data.flows_seen.toLocaleString()} flows seen` +
      (data.lost ? ` · ${data.lost.toLocaleString()} missed` : '') +
      (data.truncated ? ` · ${data.truncated.toLocaleString()} over the limits` : '') +
      ` · idle entries leave after ${Math.round(data.window_seconds / 60)} min`;
    if (key === state.mapKey) return;
    state.mapKey = key;
    mapData = data;
    const focusedId = document.activeElement && document.activeElement.closest && document.activeElement.closest('.node')?.dataset.id;
    const lay = layout(data, mapWrap.clientWidth - 4);
    const root = svg('svg', {
      width: lay.width,
      height: lay.height,
      viewBox: `0 0 ${lay.width} ${lay.height}`,
      role: 'group',
      'aria-label': 'Service map: workloads by namespace, and what they connect to',
    });
    const defs = svg('defs');
    for (const cls of ['allowed', 'denied', 'mixed', 'audit', 'none']) {
      defs.append(
        svg('marker', { id: 'arrow-' + cls, viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' },
          svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'marker-' + cls })),
      );
    }
    root.append(defs);
    const edgeLayer = svg('g', { 'aria-hidden': 'true' });
    const labelLayer = svg('g', { 'aria-hidden': 'true' });
    const outgoing = new Map(); // source id -> edges drawn so far, to set their labels apart
    for (const e of data.edges) {
      const a = lay.boxes.get(e.source);
      const b = lay.boxes.get(e.target);
      if (!a || !b || a === b) continue;
      const p = edgePath(a, b);
      const width = Math.min(6, 1.5 + Math.log10(e.flows + 1));
      const ends = { 'data-source': e.source, 'data-target': e.target };
      edgeLayer.append(
        svg('path', { d: p.d, class: 'edge ' + e.class, 'stroke-width': width.toFixed(1), 'marker-end': `url(#arrow-${e.class})`, ...ends },
          svg('title', { text: `${a.n.label} → ${b.n.label}: ${e.flows} flows (${verdictText(e.verdicts)}) ${e.ports.join(' ')}` })),
      );
      // The count sits where the edge leaves its source: every source has its own row, so the
      // labels of 50 edges into one node do not pile up where the edges meet.
      const k = outgoing.get(e.source) || 0;
      outgoing.set(e.source, k + 1);
      const right = b.x >= a.x + a.w || (b.x < a.x + a.w && b.x + b.w > a.x);
      const lx = right ? a.x + a.w + 6 + k * 48 : a.x - 6 - k * 48;
      labelLayer.append(svg('text', { x: lx, y: a.y + a.h / 2 - 5, 'text-anchor': right ? 'start' : 'end', class: 'edge-label ' + e.class, ...ends, text: e.flows.toLocaleString() }));
    }
    root.append(edgeLayer);
    const nodeLayer = svg('g');
    for (const gb of lay.groupBoxes) {
      nodeLayer.append(
        svg('rect', { x: gb.x, y: gb.y, width: gb.w, height: gb.h, rx: 6, class: 'group-box ' + gb.g.kind }),
        svg('text', { x: gb.x + PAD, y: gb.y + 16, class: 'group-title', text: gb.g.kind === 'namespace' ? `namespace ${gb.g.id}` : gb.g.id }),
      );
    }
    for (const box of lay.boxes.values()) {
      const n = box.n;
      const kind = n.workload_kind ? ` (${n.workload_kind})` : '';
      const where = n.kind === 'workload' ? ` in namespace ${n.namespace}` : '';
      const audit = n.audit_mode ? ', in audit mode' : '';
      const g = svg('g', {
        class: 'node ' + n.kind + (n.audit_mode ? ' audit-mode' : '') + (state.mapSelected === n.id ? ' selected' : ''),
        transform: `translate(${box.x},${box.y})`,
        tabindex: '-1',
        role: 'button',
        'aria-label': `${nodeLabel(n)}${kind}${where}${audit}: ${n.flows} flows`,
        'aria-pressed': String(state.mapSelected === n.id),
        data: { id: n.id },
      });
      const count = n.flows.toLocaleString();
      // About 7.5 px a character at 13 px (bold metadata labels a little more).
      const room = Math.floor((box.w - 24 - count.length * 6.5) / (n.kind === 'metadata' ? 8.2 : 7.5));
      g.append(
        svg('rect', { width: box.w, height: box.h, rx: 4 }),
        svg('text', { x: 8, y: 17, text: short(nodeLabel(n), room) }, svg('title', { text: `${n.label}${kind}${where}${audit}\n${n.pods.join('\n')}` })),
        svg('text', { x: box.w - 8, y: 17, 'text-anchor': 'end', class: 'count', text: count }),
      );
      nodeLayer.append(g);
    }
    root.append(nodeLayer, labelLayer);
    mapWrap.replaceChildren(root);
    // One tab stop on the map; the arrow keys move between nodes.
    const stop = (state.mapCurrent && mapWrap.querySelector(`.node[data-id="${CSS.escape(state.mapCurrent)}"]`)) || mapWrap.querySelector('.node');
    if (stop) {
      stop.tabIndex = 0;
      state.mapCurrent = stop.dataset.id;
    }
    if (focusedId) mapWrap.querySelector(`.node[data-id="${CSS.escape(focusedId)}"]`)?.focus();
    if (state.mapSelected && !lay.boxes.has(state.mapSelected)) state.mapSelected = null;
    highlight();
    drawEdgeTable(data);
  }

  function drawEdgeTable(data) {
    const byId = new Map(data.nodes.map((n) => [n.id, n]));
    const name = (id) => {
      const n = byId.get(id);
      if (!n) return id;
      return n.kind === 'workload' ? `${n.namespace}/${n.label}` : n.label;
    };
    const rows = data.edges.map((e) =>
      el('tr', { data: { source: e.source, target: e.target } },
        el('td', { text: name(e.source) }),
        el('td', { text: name(e.target) }),
        el('td', { text: e.ports.join(' ') }),
        el('td', { text: e.flows.toLocaleString() }),
        el('td', {}, ...Object.entries(e.verdicts).map(([k, n]) => el('span', { class: 'badge verdict ' + k, text: `${k} ${n}` }))),
        el('td', { class: 'verdict ' + e.last_verdict, text: e.last_verdict }),
      ),
    );
    $('#edges tbody').replaceChildren(...rows);
  }

  function selectNode(id) {
    state.mapSelected = id;
    for (const g of mapWrap.querySelectorAll('.node')) {
      const on = g.dataset.id === id;
      g.classList.toggle('selected', on);
      g.setAttribute('aria-pressed', String(on));
    }
    highlight();
  }

  function highlight() {
    const id = state.mapSelected;
    mapWrap.classList.toggle('has-selection', Boolean(id));
    for (const e of mapWrap.querySelectorAll('.edge, .edge-label')) {
      e.classList.toggle('lit', Boolean(id) && (e.dataset.source === id || e.dataset.target === id));
    }
    const box = $('#map-selection');
    const n = id && mapData ? mapData.nodes.find((x) => x.id === id) : null;
    if (!n) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const edges = mapData.edges.filter((e) => e.source === id || e.target === id);
    const show = el('button', { type: 'button', text: 'Show its flows' });
    show.addEventListener('click', () => {
      if (n.kind === 'workload') {
        ensureOption(fNamespace, n.namespace);
        fNamespace.value = n.namespace;
        fText.value = n.pods.length === 1 ? n.pods[0] : '';
      } else {
        fText.value = n.kind === 'metadata' ? n.id.replace(/^metadata:/, '') : '';
      }
      applyFilters();
      showView('flows', true);
    });
    const clear = el('button', { type: 'button', class: 'quiet', text: 'Clear selection' });
    clear.addEventListener('click', () => selectNode(null));
    box.replaceChildren(
      el('strong', { text: n.kind === 'workload' ? `${n.namespace}/${n.label}` : n.label }),
      ` · ${n.flows.toLocaleString()} flows · ${edges.length} connections`,
      n.pods.length ? el('div', { class: 'muted', text: 'pods: ' + n.pods.join(', ') }) : null,
      el('div', {}, show, ' ', clear),
    );
    box.hidden = false;
  }

  mapWrap.addEventListener('click', (ev) => {
    const g = ev.target.closest('.node');
    selectNode(g && g.dataset.id !== state.mapSelected ? g.dataset.id : null);
  });
  mapWrap.addEventListener('keydown', (ev) => {
    const g = ev.target.closest('.node');
    if (!g || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      selectNode(g.dataset.id !== state.mapSelected ? g.dataset.id : null);
      return;
    }
    const nodes = [...mapWrap.querySelectorAll('.node')];
    const i = nodes.indexOf(g);
    const to = { ArrowDown: i + 1, ArrowRight: i + 1, j: i + 1, ArrowUp: i - 1, ArrowLeft: i - 1, k: i - 1, Home: 0, End: nodes.length - 1 }[ev.key];
    if (to === undefined || !nodes[to]) return;
    ev.preventDefault();
    g.tabIndex = -1;
    nodes[to].tabIndex = 0;
    state.mapCurrent = nodes[to].dataset.id;
    nodes[to].focus();
  });
  mapWrap.addEventListener('focusin', (ev) => {
    const g = ev.target.closest && ev.target.closest('.node');
    if (!g || g.dataset.id === state.mapCurrent) return;
    for (const n of mapWrap.querySelectorAll('.node[tabindex="0"]')) n.tabIndex = -1;
    g.tabIndex = 0;
    state.mapCurrent = g.dataset.id;
  });
  window.addEventListener('resize', () => {
    if (state.view === 'map' && mapData) {
      clearTimeout(state.resizeTimer);
      state.resizeTimer = setTimeout(() => drawMap(mapData), 150);
    }
  });

  // ---------------------------------------------------------------- the IMDS view

  const CREDENTIAL_NAMES = {
    'azure-managed-identity': 'Azure managed identity token',
    'aws-session-token': 'AWS IMDSv2 session token',
    'aws-role-credentials': 'AWS role credentials',
    'gcp-access-token': 'GCP access token',
    'gcp-identity-token': 'GCP identity token',
    'eks-pod-identity': 'EKS Pod Identity credentials',
    'alibaba-role-credentials': 'Alibaba Cloud RAM role credentials',
    'wire-server-certificates': 'Azure WireServer certificates',
    'host-ga-plugin-settings': 'Azure HostGAPlugin extension settings',
  };

  // The labels of crates/imdsguard-metadata's Kind::label, by their serialized names.
  const SERVICE_LABELS = {
    'imds': 'IMDS',
    'wire-server': 'WireServer',
    'pod-identity-agent': 'EKS Pod Identity',
    'gke-metadata-server': 'GKE metadata server',
  };

  function badges(verdicts) {
    const entries = Object.entries(verdicts);
    if (!entries.length) return [el('span', { class: 'muted', text: 'none' })];
    return entries.map(([k, n]) => el('span', { class: 'badge verdict ' + k, text: `${k} ${n}` }));
  }
  function codes(c) {
    return Object.entries(c)
      .map(([code, n]) => `${code} ×${n}`)
      .join(', ');
  }
  function fact(name, ...value) {
    return el('div', {}, el('dt', { text: name }), el('dd', {}, ...value));
  }
  function table(caption, head, rows) {
    return el('div', { class: 'table-wrap' },
      el('table', {},
        el('caption', { class: 'visually-hidden', text: caption }),
        el('thead', {}, el('tr', {}, ...head.map((h) => el('th', { scope: 'col', text: h })))),
        el('tbody', {}, ...rows)));
  }

  function drawImds(data) {
    const key = JSON.stringify(data.callers);
    const n = data.callers.length;
    $('#imds-stats').textContent =
      `${n} ${n === 1 ? 'workload' : 'workloads'} called a metadata endpoint (idle ones leave after ${Math.round(data.window_seconds / 60)} min)` +
      ` · ${data.calls_seen.toLocaleString()} flows to metadata endpoints seen` +
      (data.lost ? ` · ${data.lost.toLocaleString()} flows missed` : '');
    if (key === state.imdsKey) return;
    state.imdsKey = key;
    const root = $('#imds-callers');
    if (!n) {
      root.replaceChildren(el('p', { class: 'empty', text: 'No workload has called a metadata endpoint yet.' }));
      return;
    }
    root.replaceChildren(...data.callers.map(callerCard));
  }

  /** `pod/container`, or what stands for it when the flows did not say. */
  function containerLabel(c, k) {
    return [k.pod, k.container].filter(Boolean).join('/') || (c.kind === 'host' ? 'node' : 'unknown container');
  }

  /** `istio-proxy (envoy), app (python3)`: the containers that called, over all pods. */
  function containerSummary(containers) {
    const names = new Map();
    for (const k of containers) {
      const key = k.container || 'unknown container';
      if (!names.has(key)) names.set(key, new Set());
      for (const p of k.processes) if (p.name) names.get(key).add(p.name);
    }
    return [...names].map(([name, procs]) => (procs.size ? `${name} (${[...procs].join(', ')})` : name)).join(', ');
  }

  function containersTable(c, title) {
    return table('Who in the pod called, for ' + title, ['Pod/container', 'Processes', 'Flows', 'Verdicts', 'Last seen'], c.containers.map((k) =>
      el('tr', { class: 'container-row', data: { pod: k.pod, container: k.container } },
        el('td', { text: containerLabel(c, k) }),
        el('td', { text: k.processes.map((p) => processText(p.name, p.pids, p.uids)).join(', ') || 'not known' }),
        el('td', { text: String(k.flows) }),
        el('td', {}, ...badges(k.verdicts)),
        el('td', { text: fmtDateTime(k.last_seen) }))));
  }

  function callerCard(c) {
    const title = c.kind === 'workload' ? `${c.namespace}/${c.workload}` : c.workload;
    // Absent from the JSON when no flow carried process information.
    const containers = c.containers || [];
    const conn = Object.entries(c.connections).map(([d, k]) => `${d} ${k}`).join(', ') || 'no policy verdicts seen';
    const card = el('section', { class: 'caller', data: { id: c.id, class: c.class }, 'aria-label': title },
      el('h2', {}, title, c.workload_kind ? el('span', { class: 'muted', text: ` ${c.workload_kind}` }) : null,
        c.audit ? el('span', { class: 'badge cls-audit audit-mode', title: c.audit_mode ? 'In audit mode: what a policy would deny passes and is reported as AUDIT' : 'Some calls were audited: a policy in audit mode let through what it would deny', text: 'AUDIT' }) : null),
      el('dl', { class: 'facts' },
        fact('Called', c.endpoints.map((e) => `${SERVICE_LABELS[e.service] || 'IMDS'} ${e.address}:${e.port}`).join(', ')),
        fact('Verdicts', ...badges(c.verdicts)),
        fact('Connections', conn),
        c.pods.length ? fact('Pods', c.pods.join(', ')) : null,
        containers.length ? fact('Containers', containerSummary(containers)) : null,
        c.ips.length ? fact('IPs', c.ips.join(', ')) : null,
        c.identities.length ? fact('Identity', c.identities.join(', ')) : null,
        fact('Last seen', fmtDateTime(c.last_seen)),
      ),
    );
    if (containers.length) {
      card.append(el('h3', { text: 'Who in the pod called' }));
      card.append(containersTable({ ...c, containers }, title));
    }
    card.append(el('h3', { text: 'Decided by' }));
    const decided = c.policies.map((p) =>
      el('li', {}, el('span', { class: 'badge cls-' + { allowed: 'allowed', denied: 'denied', audited: 'audit' }[p.decision], text: p.decision === 'audited' ? 'AUDIT' : p.decision }),
        `${p.name} (${p.kind}${p.namespace ? `, namespace ${p.namespace}` : ''}) ×${p.count}`,
        p.audit_mode ? el('span', { class: 'badge cls-audit audit-mode policy-audit', title: 'This policy is in audit mode: it drops nothing', text: 'audit mode' }) : null));
    if (c.default_denied) decided.push(el('li', {}, el('span', { class: 'badge cls-denied', text: 'denied' }), `no policy allows it (default deny) ×${c.default_denied}`));
    card.append(decided.length ? el('ul', {}, ...decided) : el('p', { class: 'muted', text: 'No policy named in the flows seen (no policy selects this workload, or only trace events were seen).' }));
    card.append(el('h3', { text: 'Token requests' }));
    card.append(c.credentials.length
      ? table('Token requests of ' + title, ['What', 'Resource', 'Identity', 'Requests', 'Verdicts', 'Responses'], c.credentials.map((t) =>
        el('tr', {},
          el('td', { text: CREDENTIAL_NAMES[t.kind] || t.kind }),
          el('td', { text: t.resource || '(not given)' }),
          el('td', { text: t.identity || 'default' }),
          el('td', { text: String(t.count) }),
          el('td', {}, ...badges(t.verdicts)),
          el('td', { text: codes(t.codes) }))))
      : el('p', { class: 'muted', text: 'None seen.' }));
    card.append(el('h3', { text: 'HTTP requests' }));
    card.append(c.requests.length
      ? table('HTTP requests of ' + title, ['Method', 'Path', 'Requests', 'Verdicts', 'Responses'], c.requests.map((r) =>
        el('tr', {},
          el('td', { text: r.method }),
          el('td', { text: r.path }),
          el('td', { text: String(r.count) }),
          el('td', {}, ...badges(r.verdicts)),
          el('td', { text: codes(r.codes) }))))
      : el('p', { class: 'muted', text: 'None seen: HTTP is recorded only when a policy sends this traffic through the L7 proxy.' }));
    if (c.truncated) card.append(el('p', { class: 'muted', text: `${c.truncated} more distinct values not kept (limits).` }));
    return card;
  }

  // ---------------------------------------------------------------- start

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !state.paused) refreshView();
  });
  loadLocation();
  loadStatus();
  showView(state.view, false);
  connect(null);
})();
