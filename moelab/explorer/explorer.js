/* moelab routing explorer: self-contained, no dependencies, no network.
 *
 * window.moelabExplorer.mount(rootElement, payload) builds the view. The payload is written by
 * moelab/explorer/payload.py: typed arrays, delta-coded and byte-shuffled where that helps,
 * deflated and base64-encoded; weights in moelab.codec's 16-bit code (the store's precision). Only the text blocks near the
 * viewport hold token elements (IntersectionObserver); the others are empty boxes of their
 * measured (or estimated) height, so a 100k-token trace opens without freezing the page.
 * When mounting is done the root gets data-ready="1" and data-mount-ms (time spent in mount).
 */
(function () {
  "use strict";
  var VERSION = 2;
  if (window.moelabExplorer && window.moelabExplorer.version === VERSION) return;

  var BLOCK = 192;                 // tokens per virtualised text block (at most)

  // ------------------------------------------------------------------ decoding
  function b64bytes(s) {
    var bin = atob(s), n = bin.length, out = new Uint8Array(n);
    for (var i = 0; i < n; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function inflate(bytes) {
    if (typeof DecompressionStream === "undefined")
      return Promise.reject(new Error("this browser lacks DecompressionStream; save with compress=False"));
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }
  var HALF = new Float32Array(65536);
  (function () {
    for (var h = 0; h < 65536; h++) {
      var s = (h & 0x8000) ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      HALF[h] = e === 0 ? s * Math.pow(2, -14) * (f / 1024)
        : e === 31 ? (f ? NaN : s * Infinity) : s * Math.pow(2, e - 15) * (1 + f / 1024);
    }
  })();
  function typed(dtype, bytes) {
    var buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    switch (dtype) {
      case "uint8": return new Uint8Array(buf);
      case "uint16": return new Uint16Array(buf);
      case "uint32": return new Uint32Array(buf);
      case "int32": return new Int32Array(buf);
      case "float32": return new Float32Array(buf);
      case "float16":
        var h = new Uint16Array(buf), out = new Float32Array(h.length);
        for (var i = 0; i < h.length; i++) out[i] = HALF[h[i]];
        return out;
    }
    throw new Error("unknown dtype " + dtype);
  }
  var SIZE = { uint8: 1, uint16: 2, uint32: 4, int32: 4, float32: 4, float16: 2 };
  function unshuffle(b, size) {            // byte planes (all byte 0s, all byte 1s, ...) -> elements
    if (size === 1) return b;
    var n = b.length / size, out = new Uint8Array(b.length);
    for (var p = 0; p < size; p++) { var o = p * n; for (var i = 0; i < n; i++) out[i * size + p] = b[o + i]; }
    return out;
  }
  function decode(spec) {
    if (!spec) return Promise.resolve(null);
    var bytes = b64bytes(spec.b64);
    return (spec.z ? inflate(bytes) : Promise.resolve(bytes)).then(function (b) {
      var a = typed(spec.dtype, spec.s ? unshuffle(b, SIZE[spec.dtype]) : b);
      if (spec.d) for (var i = 1; i < a.length; i++) a[i] = a[i - 1] + a[i];   // wraps like the integer type
      return a;
    });
  }
  // weights: moelab.codec's code16 (0 = zero; else the float32 bits (code + 65535) << 13);
  // code16_drop0 stores ranks 1..k-1 and rank 0 is 1 - their float32 sum, as load_trace rebuilds it
  function codeToFloat(c) {
    var bits = new Uint32Array(c.length);
    for (var i = 0; i < c.length; i++) bits[i] = c[i] ? (c[i] + 65535) * 8192 : 0;
    return new Float32Array(bits.buffer);
  }
  function decodeWeights(spec) {
    if (!spec) return Promise.resolve(null);
    return decode(spec.data).then(function (a) {
      if (spec.layout === "float32") return a;
      var f = codeToFloat(a);
      if (spec.layout === "code16") return f;
      if (spec.layout !== "code16_drop0") throw new Error("unknown weights layout " + spec.layout);
      var k = spec.k, kw = k - 1, rows = f.length / kw, out = new Float32Array(rows * k), fr = Math.fround;
      for (var r = 0; r < rows; r++) {
        var s = 0;
        for (var j = 0; j < kw; j++) { var x = f[r * kw + j]; s = fr(s + x); out[r * k + 1 + j] = x; }
        out[r * k] = fr(1 - s);
      }
      return out;
    });
  }

  // ------------------------------------------------------------------ helpers
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function fmt(n) { return n.toLocaleString("en-US"); }
  function pct(x) { return (100 * x).toFixed(1) + "%"; }
  function w3(x) { return x.toFixed(3); }

  // ------------------------------------------------------------------ mount
  function mount(root, P) {
    var t0 = performance.now();
    root.classList.add("moelab-x");
    root.setAttribute("tabindex", "0");
    var jobs = [P.token_index, P.ids, P.sequence_index, P.position, P.order].map(decode);
    P.filters.forEach(function (f) { jobs.push(decode(f.codes)); });
    P.runs.forEach(function (r) { jobs.push(decode(r.experts), decodeWeights(r.weights), decode(r.probs)); });
    return Promise.all(jobs).then(function (arr) {
      var order = arr[4];
      if (!order) { order = new Uint32Array(P.tokens); for (var t = 0; t < P.tokens; t++) order[t] = t; }
      var D = { tokIndex: arr[0], ids: arr[1], seqIndex: arr[2], position: arr[3], order: order, filters: [], runs: [] };
      var j = 5;
      P.filters.forEach(function (f) { D.filters.push({ name: f.name, categories: f.categories, codes: arr[j++] }); });
      P.runs.forEach(function () { D.runs.push({ experts: arr[j++], weights: arr[j++], probs: arr[j++] }); });
      build(root, P, D);
      root.dataset.mountMs = (performance.now() - t0).toFixed(1);
      root.dataset.readyAt = performance.now().toFixed(1);   // ms since the page started loading
      root.dataset.ready = "1";
    }).catch(function (err) {
      root.textContent = "moelab explorer could not start: " + err;
      root.dataset.error = String(err);
      throw err;
    });
  }

  function build(root, P, D) {
    var T = P.tokens, L = P.layers, K = P.k, E = P.num_experts, R = D.runs.length;
    var S = { layer: P.start_layer, both: false, run: 0, diff: R > 1, expert: -1, filters: {}, seq: -1, hover: -1 };
    var colors = P.colors, ink = P.text_colors;
    root.innerHTML = "";

    // ---------------- controls
    var bar = el("div", "mx-bar");
    if (P.title) bar.appendChild(el("span", "mx-title", P.title));
    var layerBox = el("label", "mx-ctl");
    var slider = el("input", "mx-layer");
    slider.type = "range"; slider.min = 0; slider.max = L - 1; slider.step = 1; slider.value = S.layer;
    var layerLabel = el("span", "mx-layer-label");
    layerBox.appendChild(el("span", null, "layer "));
    layerBox.appendChild(slider); layerBox.appendChild(layerLabel);
    bar.appendChild(layerBox);
    var bothBox = el("label", "mx-ctl");
    var both = el("input", "mx-both"); both.type = "checkbox";
    bothBox.appendChild(both); bothBox.appendChild(el("span", null, " both choices" + (K < 2 ? " (k=1)" : "")));
    both.disabled = K < 2;
    bar.appendChild(bothBox);
    var runSel = null, diffBox = null, diff = null;
    if (R > 1) {
      runSel = el("select", "mx-run");
      P.labels.forEach(function (lab, r) { var o = el("option", null, "colour by " + lab); o.value = r; runSel.appendChild(o); });
      bar.appendChild(runSel);
      diffBox = el("label", "mx-ctl");
      diff = el("input", "mx-diff"); diff.type = "checkbox"; diff.checked = S.diff;
      diffBox.appendChild(diff); diffBox.appendChild(el("span", null, " mark differences"));
      bar.appendChild(diffBox);
    }
    var filterSels = [];
    D.filters.forEach(function (f, fi) {
      var s = el("select", "mx-filter"); s.dataset.filter = f.name;
      var o = el("option", null, "all " + f.name); o.value = "-1"; s.appendChild(o);
      f.categories.forEach(function (c, ci) { var oo = el("option", null, c); oo.value = ci; s.appendChild(oo); });
      s.addEventListener("change", function () { S.filters[fi] = +s.value; rebuild(); });
      filterSels.push(s); bar.appendChild(s);
    });
    var seqSel;
    if (P.sequences.length <= 2000) {
      seqSel = el("select", "mx-seq");
      var o0 = el("option", null, "all sequences"); o0.value = "-1"; seqSel.appendChild(o0);
      P.sequences.forEach(function (s, si) { var o = el("option", null, "sequence " + s); o.value = si; seqSel.appendChild(o); });
    } else {
      seqSel = el("input", "mx-seq"); seqSel.type = "number"; seqSel.placeholder = "sequence (all)";
    }
    seqSel.addEventListener("change", function () {
      if (seqSel.tagName === "SELECT") S.seq = +seqSel.value;
      else { var v = seqSel.value === "" ? -1 : P.sequences.indexOf(+seqSel.value); S.seq = v; }
      rebuild();
    });
    bar.appendChild(seqSel);
    root.appendChild(bar);
    var status = el("div", "mx-status");
    root.appendChild(status);
    var legend = el("div", "mx-legend");
    for (var e = 0; e < E; e++) {
      var b = el("button", "mx-e", String(e));
      b.dataset.expert = e; b.title = "expert " + e + ": click to highlight its tokens";
      b.style.background = colors[e]; b.style.color = ink[e];
      legend.appendChild(b);
    }
    root.appendChild(legend);
    var main = el("div", "mx-main");
    var text = el("div", "mx-text");
    var side = el("div", "mx-side");
    var hoverBox = el("div", "mx-hover", "hover a token: its experts and weights in every layer");
    var expertBox = el("div", "mx-expert", "click an expert (legend or table) to highlight its tokens");
    side.appendChild(hoverBox); side.appendChild(expertBox);
    main.appendChild(text); main.appendChild(side);
    root.appendChild(main);
    root.appendChild(el("div", "mx-help",
      "keys: \u2190/\u2192 or [ ] layer \u00b7 b both choices \u00b7 d mark differences \u00b7 Esc clear \u00b7 " +
      "colours: moelab.plots.expert_colors"));

    // ---------------- routing access
    function at(r, i, l, rank) { return D.runs[r].experts[(i * L + l) * K + rank]; }
    function has(r, i, l, e) { var b = (i * L + l) * K, ex = D.runs[r].experts; for (var q = 0; q < K; q++) if (ex[b + q] === e) return true; return false; }
    var diffCache = {};
    function diffMask(l) {
      if (R < 2) return null;
      if (diffCache[l]) return diffCache[l];
      var m = new Uint8Array(T), a = D.runs[0].experts, b = D.runs[1].experts;
      for (var i = 0; i < T; i++) {
        var base = (i * L + l) * K;
        for (var q = 0; q < K && !m[i]; q++) {
          var found = false;
          for (var p = 0; p < K; p++) if (a[base + q] === b[base + p]) { found = true; break; }
          if (!found) m[i] = 1;
        }
      }
      return (diffCache[l] = m);
    }
    var anyDiff = null;
    function anyLayerDiff() {
      if (anyDiff !== null) return anyDiff;
      var n = 0, seen = new Uint8Array(T);
      for (var l = 0; l < L; l++) { var m = diffMask(l); for (var i = 0; i < T; i++) if (m[i]) seen[i] = 1; }
      for (var i2 = 0; i2 < T; i2++) n += seen[i2];
      return (anyDiff = n);
    }

    // ---------------- view (filtered order) and virtualised blocks
    var view = null, blocks = [], charW = 7.8, lineH = 20, observer = null, rendered = 0;
    (function measure() {
      var probe = el("span", "mx-t", "MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM");
      var line = el("div", "mx-block"); line.appendChild(probe); text.appendChild(line);
      var r = probe.getBoundingClientRect();
      if (r.width > 0) { charW = r.width / 50; }
      if (line.getBoundingClientRect().height > 0) lineH = line.getBoundingClientRect().height;
      text.removeChild(line);
    })();
    function passes(i) {
      if (S.seq >= 0 && D.seqIndex[i] !== S.seq) return false;
      for (var f = 0; f < D.filters.length; f++) {
        var v = S.filters[f]; if (v != null && v >= 0 && D.filters[f].codes[i] !== v) return false;
      }
      return true;
    }
    var perLine = 80;
    function estimate(blk) {
      var lines = 1, col = 0;
      for (var j = blk.start; j < blk.end; j++) {
        var s = P.strings[D.tokIndex[view[j]]];
        for (var c = 0; c < s.length; c++) {
          if (s.charCodeAt(c) === 10) { lines++; col = 0; } else if (++col >= perLine) { lines++; col = 0; }
        }
      }
      return lines * lineH + (blk.head ? lineH : 0) + 4;
    }
    function rebuild() {
      var idx = [];
      for (var j = 0; j < T; j++) { var i = D.order[j]; if (passes(i)) idx.push(i); }
      view = Int32Array.from(idx);
      if (observer) observer.disconnect();
      text.innerHTML = ""; blocks = []; rendered = 0;
      perLine = Math.max(10, Math.floor(Math.max(200, text.clientWidth - 24) / charW));   // one layout read
      var start = 0;
      while (start < view.length) {
        var seq = D.seqIndex[view[start]], end = start;
        while (end < view.length && end - start < BLOCK && D.seqIndex[view[end]] === seq) end++;
        var head = start === 0 || D.seqIndex[view[start - 1]] !== seq;
        var blk = { start: start, end: end, head: head, div: el("div", "mx-block"), filled: false, spans: null, h: 0 };
        blk.div.dataset.block = blocks.length;
        blk.h = estimate(blk);
        blk.div.style.height = blk.h + "px";
        blocks.push(blk); text.appendChild(blk.div);
        start = end;
      }
      if (!view.length) text.appendChild(el("div", "mx-empty", "no token matches the filters"));
      observer = new IntersectionObserver(onIntersect, { root: text, rootMargin: "600px 0px" });
      blocks.forEach(function (b) { observer.observe(b.div); });
      updateStatus();
      if (S.expert >= 0) showExpert();
    }
    function onIntersect(entries) {
      entries.forEach(function (en) {
        var blk = blocks[+en.target.dataset.block];
        if (!blk) return;
        if (en.isIntersecting) fill(blk); else empty(blk);
      });
      updateStatus();
    }
    function fill(blk) {
      if (blk.filled) return;
      var frag = document.createDocumentFragment();
      if (blk.head) {
        var i0 = view[blk.start], h = "sequence " + P.sequences[D.seqIndex[i0]];
        D.filters.forEach(function (f) { h += " \u00b7 " + f.name + " " + f.categories[f.codes[i0]]; });
        frag.appendChild(el("div", "mx-seqhead", h));
      }
      blk.spans = [];
      for (var j = blk.start; j < blk.end; j++) {
        var i = view[j], s = P.strings[D.tokIndex[i]];
        var sp = el("span", "mx-t", s === "\n" ? "\u21b5\n" : s);
        sp.dataset.i = i;
        paint(sp, i);
        frag.appendChild(sp); blk.spans.push(sp);
      }
      blk.div.appendChild(frag);
      blk.div.style.height = "";
      blk.filled = true; rendered += blk.end - blk.start;
    }
    function empty(blk) {
      if (!blk.filled) return;
      var h = blk.div.getBoundingClientRect().height;
      if (h > 0) blk.h = h;
      blk.div.innerHTML = ""; blk.div.style.height = blk.h + "px";
      blk.filled = false; blk.spans = null; rendered -= blk.end - blk.start;
    }
    function paint(sp, i) {
      var r = S.run, l = S.layer, e1 = at(r, i, l, 0);
      if (S.both && K > 1) {
        var e2 = at(r, i, l, 1);
        sp.style.background = "linear-gradient(180deg, " + colors[e1] + " 0 58%, " + colors[e2] + " 58% 100%)";
      } else sp.style.background = colors[e1];
      sp.style.color = ink[e1];
      sp.dataset.expert = e1;
      var cls = "mx-t";
      if (S.expert >= 0) cls += has(r, i, l, S.expert) ? " mx-hl" : " mx-dim";
      if (S.diff && R > 1 && diffMask(l)[i]) cls += " mx-diff";
      if (i === S.hover) cls += " mx-cur";
      sp.className = cls;
    }
    function repaint() {
      blocks.forEach(function (b) { if (b.filled) b.spans.forEach(function (sp) { paint(sp, +sp.dataset.i); }); });
      slider.value = S.layer;
      layerLabel.textContent = P.layer_ids[S.layer] + " (" + (S.layer + 1) + "/" + L + ")";
      root.dataset.layer = P.layer_ids[S.layer];
      if (S.hover >= 0) showToken(S.hover);
      if (S.expert >= 0) showExpert();
      updateStatus();
    }
    function updateStatus() {
      var nseq = P.sequences.length;
      var s = "holds " + fmt(T) + " tokens (" + fmt(nseq) + " sequence" + (nseq > 1 ? "s" : "") + ") \u00b7 " + L +
        " layers \u00b7 top-" + K + " of " + E + " experts" + (P.nbytes ? " \u00b7 " + (P.nbytes < 1e6 ? (P.nbytes / 1e3).toFixed(1) + " kB" : (P.nbytes / 1e6).toFixed(2) + " MB") : "") +
        " \u00b7 showing " + fmt(view ? view.length : 0) + " \u00b7 rendered " + fmt(rendered);
      if (R > 1) {
        var m = diffMask(S.layer), n = 0;
        for (var i = 0; i < T; i++) n += m[i];
        s += " \u00b7 " + P.labels[0] + " vs " + P.labels[1] + ": expert set differs for " + fmt(n) + " tokens (" +
          pct(n / T) + ") at layer " + P.layer_ids[S.layer] + ", " + fmt(anyLayerDiff()) + " at any layer";
        status.dataset.differs = n;
      }
      status.textContent = s;
      root.dataset.rendered = rendered;
    }

    // ---------------- hover table
    function chip(e) {
      var c = el("span", "mx-chip", String(e));
      c.style.background = colors[e]; c.style.color = ink[e]; c.dataset.expert = e;
      return c;
    }
    function showToken(i) {
      S.hover = i;
      hoverBox.innerHTML = "";
      var s = P.strings[D.tokIndex[i]], id = D.ids[D.tokIndex[i]] - 1;
      var head = el("div", "mx-head");
      head.appendChild(el("code", "mx-tokstr", JSON.stringify(s)));
      head.appendChild(el("span", null, " id " + (id < 0 ? "?" : id) + " \u00b7 sequence " + P.sequences[D.seqIndex[i]] +
        " \u00b7 position " + D.position[i] + " \u00b7 row " + i));
      hoverBox.appendChild(head);
      hoverBox.dataset.token = i;
      var tab = el("table", "mx-table"), thead = el("tr");
      thead.appendChild(el("th", null, "layer"));
      for (var r = 0; r < R; r++) for (var q = 0; q < K; q++)
        thead.appendChild(el("th", null, (R > 1 ? P.labels[r] + " " : "") + "rank " + (q + 1)));
      tab.appendChild(thead);
      var dm = R > 1 ? null : undefined;
      for (var l = 0; l < L; l++) {
        var tr = el("tr", l === S.layer ? "mx-curlayer" : null);
        tr.appendChild(el("td", null, String(P.layer_ids[l])));
        var differs = R > 1 && diffMask(l)[i];
        for (var r2 = 0; r2 < R; r2++) for (var q2 = 0; q2 < K; q2++) {
          var e = at(r2, i, l, q2), w = D.runs[r2].weights;
          var td = el("td", "mx-cell" + (differs ? " mx-celldiff" : ""));
          td.dataset.layer = P.layer_ids[l]; td.dataset.rank = q2; td.dataset.run = r2; td.dataset.expert = e;
          td.appendChild(chip(e));
          if (w) { var wv = w[(i * L + l) * K + q2]; td.dataset.weight = String(wv); td.appendChild(el("span", "mx-w", " " + w3(wv))); }
          tr.appendChild(td);
        }
        tab.appendChild(tr);
      }
      hoverBox.appendChild(tab);
      var probs = D.runs[S.run].probs;
      if (probs) {
        hoverBox.appendChild(el("div", "mx-sub", "router distribution (softmax of the logits" + (R > 1 ? ", " + P.labels[S.run] : "") + ")"));
        var grid = el("div", "mx-dist");
        for (var l2 = 0; l2 < L; l2++) {
          var row = el("div", "mx-distrow" + (l2 === S.layer ? " mx-curlayer" : ""));
          row.appendChild(el("span", "mx-distlab", String(P.layer_ids[l2])));
          for (var e2 = 0; e2 < E; e2++) {
            var p = probs[(i * L + l2) * E + e2], cell = el("span", "mx-pbar");
            cell.style.height = Math.max(1, Math.round(18 * p)) + "px"; cell.style.background = colors[e2];
            cell.title = "expert " + e2 + ": " + p.toFixed(3); cell.dataset.prob = String(p);
            row.appendChild(cell);
          }
          grid.appendChild(row);
        }
        hoverBox.appendChild(grid);
      }
    }

    // ---------------- expert panel
    function showExpert() {
      var e = S.expert, l = S.layer, r = S.run;
      expertBox.innerHTML = "";
      legend.querySelectorAll(".mx-e").forEach(function (b) { b.classList.toggle("mx-sel", +b.dataset.expert === e); });
      if (e < 0) { expertBox.textContent = "click an expert (legend or table) to highlight its tokens"; delete root.dataset.expert; return; }
      root.dataset.expert = e;
      var n = 0, first = 0, counts = new Map(), fcol = D.filters.length ? 0 : -1, fcount = null, ftotal = null;
      for (var f = 0; f < D.filters.length; f++) if (D.filters[f].name === "domain") fcol = f;
      if (fcol >= 0) { fcount = new Float64Array(D.filters[fcol].categories.length); ftotal = new Float64Array(fcount.length); }
      for (var j = 0; j < view.length; j++) {
        var i = view[j];
        if (fcol >= 0) ftotal[D.filters[fcol].codes[i]]++;
        if (!has(r, i, l, e)) continue;
        n++; if (at(r, i, l, 0) === e) first++;
        var t = D.tokIndex[i]; counts.set(t, (counts.get(t) || 0) + 1);
        if (fcol >= 0) fcount[D.filters[fcol].codes[i]]++;
      }
      expertBox.dataset.count = n;
      var head = el("div", "mx-head");
      head.appendChild(chip(e));
      head.appendChild(el("span", null, " expert " + e + " at layer " + P.layer_ids[l] + (R > 1 ? " (" + P.labels[r] + ")" : "") +
        ": " + fmt(n) + " of " + fmt(view.length) + " tokens (" + pct(view.length ? n / view.length : 0) + "), " + fmt(first) + " as first choice"));
      expertBox.appendChild(head);
      var top = Array.from(counts.entries()).sort(function (a, b) { return b[1] - a[1]; }).slice(0, 12);
      expertBox.appendChild(el("div", "mx-sub", "top tokens"));
      var tl = el("div", "mx-top");
      top.forEach(function (kv) { var x = el("span", "mx-toptok", JSON.stringify(P.strings[kv[0]]) + " \u00d7" + kv[1]); tl.appendChild(x); });
      expertBox.appendChild(tl);
      if (fcol >= 0 && n) {
        var F = D.filters[fcol];
        expertBox.appendChild(el("div", "mx-sub", "its tokens by " + F.name + " (and the share of that " + F.name + "'s tokens it gets)"));
        var order = Array.from(fcount.keys()).sort(function (a, b) { return fcount[b] - fcount[a]; });
        order.forEach(function (c) {
          if (!fcount[c]) return;
          var row = el("div", "mx-share"), barw = el("span", "mx-sharebar");
          barw.style.width = Math.round(120 * fcount[c] / n) + "px";
          row.appendChild(el("span", "mx-sharelab", F.categories[c]));
          row.appendChild(barw);
          row.appendChild(el("span", null, " " + pct(fcount[c] / n) + " (" + pct(fcount[c] / ftotal[c]) + " of " + F.categories[c] + ")"));
          row.dataset.category = F.categories[c]; row.dataset.share = fcount[c] / n;
          expertBox.appendChild(row);
        });
      }
    }

    // ---------------- events
    function setLayer(l) { S.layer = Math.max(0, Math.min(L - 1, l)); repaint(); }
    function setExpert(e) { S.expert = S.expert === e ? -1 : e; repaint(); }
    slider.addEventListener("input", function () { setLayer(+slider.value); });
    both.addEventListener("change", function () { S.both = both.checked; repaint(); });
    if (runSel) runSel.addEventListener("change", function () { S.run = +runSel.value; repaint(); });
    if (diff) diff.addEventListener("change", function () { S.diff = diff.checked; repaint(); });
    text.addEventListener("mouseover", function (ev) {
      var t = ev.target.closest ? ev.target.closest(".mx-t") : null;
      if (!t || t.dataset.i == null) return;
      var prev = S.hover;
      showToken(+t.dataset.i);
      if (prev !== S.hover) {
        var old = text.querySelector(".mx-cur"); if (old) old.classList.remove("mx-cur");
        t.classList.add("mx-cur");
      }
    });
    root.addEventListener("click", function (ev) {
      var t = ev.target.closest ? ev.target.closest("[data-expert]") : null;
      if (!t || !root.contains(t) || t.classList.contains("mx-t") || t.tagName === "TD") return;
      setExpert(+t.dataset.expert);
    });
    root.addEventListener("keydown", function (ev) {
      if (ev.target.tagName === "SELECT" || ev.target.tagName === "INPUT" && ev.target.type !== "range" && ev.target.type !== "checkbox") return;
      var k = ev.key, handled = true;
      if (k === "ArrowRight" || k === "]") setLayer(S.layer + 1);
      else if (k === "ArrowLeft" || k === "[") setLayer(S.layer - 1);
      else if (k === "b" && K > 1) { S.both = !S.both; both.checked = S.both; repaint(); }
      else if (k === "d" && diff) { S.diff = !S.diff; diff.checked = S.diff; repaint(); }
      else if (k === "Escape") { S.expert = -1; repaint(); }
      else handled = false;
      if (handled) { ev.preventDefault(); ev.stopPropagation(); }
    });

    rebuild();
    repaint();
  }

  window.moelabExplorer = { version: VERSION, mount: mount, decode: decode, decodeWeights: decodeWeights };
})();
