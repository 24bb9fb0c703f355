// The record viewer: the record is verified by this daemon (POST /v1/records/verify), drawn
// from the DOT of POST /v1/records/graph by Graphviz compiled to WebAssembly (@viz-js/viz),
// and each drawn step shows its decoded JSON, signer and signature when selected.
// Text from the record is only ever set as textContent, never parsed as HTML.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  let vizReady = null;
  let shown = { steps: [], signatures: [] };

  // Graphviz's WebAssembly start can abort without settling its promise (when a policy
  // forbids compiling it, for one): give up with a message rather than wait forever.
  function startViz() {
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('Graphviz (WebAssembly) did not start')), 20000));
    return Promise.race([Viz.instance(), timeout]).catch((e) => { vizReady = null; throw e; });
  }

  function setState(state) { document.body.dataset.state = state; }

  function status(kind, parts) {
    const el = $('status');
    el.className = kind;
    el.replaceChildren(...parts.map((p) => {
      if (typeof p === 'string') return document.createTextNode(p);
      const span = document.createElement('span');
      span.className = p.cls;
      span.textContent = p.text;
      return span;
    }));
  }

  // POST JSON to this daemon; the body is sent as given (the record's own text, unchanged).
  async function post(path, body) {
    const resp = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body,
      credentials: 'same-origin',
      cache: 'no-store',
    });
    return { ok: resp.ok, status: resp.status, text: await resp.text() };
  }

  function errorMessage(r) {
    try { return JSON.parse(r.text).error.message; } catch { return 'HTTP ' + r.status; }
  }

  async function show(text) {
    text = text.replace(/^\uFEFF/, '').trim();
    $('details').hidden = true;
    $('graph').replaceChildren();
    delete document.body.dataset.check;
    if (!text) { status('error', ['No record given.']); setState('error'); return; }
    try { JSON.parse(text); } catch (e) {
      status('error', ['The record is not JSON: ' + e.message]); setState('error'); return;
    }
    setState('busy');
    status('', ['Verifying…']);
    const verified = await post('/v1/records/verify', '{"details":true,"record":' + text + '}');
    if (!verified.ok) {
      const msg = errorMessage(verified);
      // "record does not verify: <check>: <where>: <why>" names the check that failed.
      const m = /^record does not verify: ([a-z-]+): (.*)$/s.exec(msg);
      if (m) {
        status('failed', ['Does not verify. Failed check: ', { cls: 'check', text: m[1] }, ' — ' + m[2]]);
        document.body.dataset.check = m[1];
        setState('failed');
      } else {
        status('error', [msg]);
        setState('error');
      }
      return;
    }
    shown = JSON.parse(verified.text);
    const graph = await post('/v1/records/graph', '{"record":' + text + '}');
    if (!graph.ok) { status('error', [errorMessage(graph)]); setState('error'); return; }
    status('', ['Drawing…']);
    const viz = await (vizReady ??= startViz());
    const svg = viz.renderSVGElement(graph.text);
    markSteps(svg);
    $('graph').replaceChildren(svg);
    const signers = new Set(shown.steps.map((s) => s._signature.signed.member));
    status('ok', [`Verified: ${shown.steps.length} steps signed by ${signers.size} member(s). Select a step to see it.`]);
    setState('drawn');
  }

  // The DOT names step i's node "s<i>" (in the order verify returns the steps); Graphviz
  // writes that name as the node's <title>.
  function markSteps(svg) {
    for (const g of svg.querySelectorAll('g.node')) {
      const m = /^s(\d+)$/.exec(g.querySelector('title')?.textContent ?? '');
      const step = m && shown.steps[Number(m[1])];
      if (!step) continue;
      const i = Number(m[1]);
      g.dataset.stepId = step.id;
      g.setAttribute('tabindex', '0');
      g.setAttribute('role', 'button');
      g.addEventListener('click', () => select(g, i));
      g.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') select(g, i); });
    }
  }

  function select(g, i) {
    for (const s of document.querySelectorAll('#graph g.node.selected')) s.classList.remove('selected');
    g.classList.add('selected');
    const step = shown.steps[i];
    const sig = shown.signatures[i] || {};
    const signed = step._signature.signed;
    $('step-title').textContent = `${step.type} ${step.id}`;
    const rows = [
      ['Member', signed.member],
      ['Organisation', signed.name],
      ['Roles', (signed.roles || []).join('\n')],
      ['Application', signed.application],
      ['Signed at', sig.signed_at],
      ['Certificate serial', sig.serial],
    ];
    const cert = sig.certificate;
    if (cert) {
      rows.push(['Certificate subject', cert.subject]);
      rows.push(['Valid from', cert.not_before]);
      rows.push(['Valid until', cert.not_after, new Date(cert.not_after) < new Date() ? 'expired now (it was valid when it signed)' : '']);
    }
    for (const by of step._signature.includedBy || []) rows.push(['Included by', `${by.name} (${by.member})`]);
    $('signer').replaceChildren(...rows.flatMap(([k, v, warn]) => {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v ?? '';
      if (warn) {
        const w = document.createElement('span');
        w.className = 'expired';
        w.textContent = ' — ' + warn;
        dd.append(w);
      }
      return [dt, dd];
    }));
    const { _signature, ...plain } = step;
    $('step-json').textContent = JSON.stringify(plain, null, 2);
    $('details').hidden = false;
    $('details').dataset.stepId = step.id;
  }

  // #record=<base64url of the record's UTF-8 text>. A fragment is never sent to a server.
  function fromFragment() {
    if (!location.hash.startsWith('#record=')) return null;
    const m = /^#record=([A-Za-z0-9_-]+={0,2})$/.exec(location.hash);
    if (!m) throw new Error('it holds characters other than A-Z a-z 0-9 - _');
    const b64 = m[1].replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
  }

  function run(text) {
    show(text).catch((e) => { status('error', ['Could not show the record: ' + e.message]); setState('error'); });
  }

  $('input').addEventListener('submit', (e) => { e.preventDefault(); run($('record').value); });
  $('file').addEventListener('change', async () => {
    const f = $('file').files[0];
    if (f) { $('record').value = await f.text(); run($('record').value); }
  });
  function onHash() {
    let text;
    try { text = fromFragment(); } catch (e) { status('error', ['#record= is not base64url: ' + e.message]); setState('error'); return; }
    if (text !== null) { $('record').value = text; run(text); }
  }
  window.addEventListener('hashchange', onHash);
  onHash();
  if (!document.body.dataset.state) setState('idle');
})();
