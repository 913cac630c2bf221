"use strict";
// vaelab latent explorer: the run's decoder in plain JavaScript (weights from the page's JSON), a map of
// test-set posterior means, sliders and an interpolation. Written by vaelab/vae/explore.py; no network.
(function () {
  const D = JSON.parse(document.getElementById("vaelab-data").textContent);
  const $ = (id) => document.getElementById(id);
  const SIDE = 28, PIXELS = SIDE * SIDE, RANGE = 4, STEPS = 9;
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf"];

  function bytes(b64) {
    const s = atob(b64), a = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
    return a;
  }
  const f32 = (b64) => new Float32Array(bytes(b64).buffer);

  // ---- the decoder: the same layers as PyTorch; activations in float64, weights float32 ----
  function relu(y) { for (let i = 0; i < y.length; i++) if (y[i] < 0) y[i] = 0; }

  function linear(L, W) {  // weights stored (in, out): a zero input (ReLU) skips its whole row
    const n = L.out, w = W.subarray(L.w, L.w + L.in * n), b = W.subarray(L.b, L.b + n), y = new Float64Array(n);
    return function (x) {
      y.set(b);
      for (let i = 0; i < L.in; i++) {
        const v = x[i];
        if (v === 0) continue;
        const o = i * n;
        if (n % 4 === 0) {  // unrolled by 4: about 25% faster in V8
          for (let j = 0; j < n; j += 4) {
            y[j] += v * w[o + j]; y[j + 1] += v * w[o + j + 1];
            y[j + 2] += v * w[o + j + 2]; y[j + 3] += v * w[o + j + 3];
          }
        } else for (let j = 0; j < n; j++) y[j] += v * w[o + j];
      }
      if (L.relu) relu(y);
      return y;
    };
  }

  function convT(L, W) {  // ConvTranspose2d, maps channel-last (HWC), weights [c_in][ky][kx][c_out]
    const { cin, cout, k, s, p, hin, hout } = L;
    const w = W.subarray(L.w, L.w + cin * k * k * cout), b = W.subarray(L.b, L.b + cout);
    const y = new Float64Array(hout * hout * cout);
    // precomputed taps: for each input position, the (weight offset, output offset) pairs it reaches
    const start = new Int32Array(hin * hin + 1), taps = [];
    for (let iy = 0; iy < hin; iy++) for (let ix = 0; ix < hin; ix++) {
      start[iy * hin + ix] = taps.length / 2;
      for (let ky = 0; ky < k; ky++) for (let kx = 0; kx < k; kx++) {
        const oy = iy * s - p + ky, ox = ix * s - p + kx;
        if (oy >= 0 && oy < hout && ox >= 0 && ox < hout) taps.push((ky * k + kx) * cout, (oy * hout + ox) * cout);
      }
    }
    start[hin * hin] = taps.length / 2;
    const T = Int32Array.from(taps);
    return function (x) {
      for (let o = 0; o < hout * hout; o++) y.set(b, o * cout);
      for (let ip = 0; ip < hin * hin; ip++) for (let ci = 0; ci < cin; ci++) {
        const v = x[ip * cin + ci];
        if (v === 0) continue;
        const wc = ci * k * k * cout;
        for (let t = start[ip]; t < start[ip + 1]; t++) {
          const wo = wc + T[2 * t], yo = T[2 * t + 1];
          if (cout % 4 === 0) {  // unrolled by 4, as in linear
            for (let co = 0; co < cout; co += 4) {
              y[yo + co] += v * w[wo + co]; y[yo + co + 1] += v * w[wo + co + 1];
              y[yo + co + 2] += v * w[wo + co + 2]; y[yo + co + 3] += v * w[wo + co + 3];
            }
          } else for (let co = 0; co < cout; co++) y[yo + co] += v * w[wo + co];
        }
      }
      if (L.relu) relu(y);
      return y;
    };
  }

  const W = f32(D.decoder.weights);
  const layers = D.decoder.layers.map((L) => (L.op === "linear" ? linear : convT)(L, W));
  const pixels = new Float32Array(PIXELS), times = [];
  function decode(z) {  // z (latent_dim) -> pixel means in [0, 1], 28 x 28 row-major (a shared buffer)
    const t0 = performance.now();
    let h = z;
    for (const f of layers) h = f(h);
    for (let i = 0; i < PIXELS; i++) pixels[i] = 1 / (1 + Math.exp(-h[i]));
    times.push(performance.now() - t0);
    if (times.length > 30) times.shift();
    return pixels;
  }

  // ---- drawing ----
  const tile = document.createElement("canvas");
  tile.width = tile.height = SIDE;
  function draw(canvas, values, scale = 1, x = 0, w = canvas.width) {  // grey image, values in [0, scale]
    const t = tile.getContext("2d"), img = t.createImageData(SIDE, SIDE);
    for (let i = 0; i < PIXELS; i++) {
      const g = Math.round((255 * values[i]) / scale);
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = g;
      img.data[4 * i + 3] = 255;
    }
    t.putImageData(img, 0, 0);
    const c = canvas.getContext("2d");
    c.imageSmoothingEnabled = false;
    c.drawImage(tile, x, 0, w, canvas.height);
  }

  // ---- the test points and the map ----
  const P = D.points, n = P.n, d = D.latent_dim;
  const xy = f32(P.xy), mu = f32(P.mu), label = bytes(P.label), index = new Int32Array(bytes(P.index).buffer);
  const map = $("map"), base = document.createElement("canvas");
  base.width = map.width; base.height = map.height;
  let lo = [Infinity, Infinity], hi = [-Infinity, -Infinity];
  for (let i = 0; i < n; i++) for (let a = 0; a < 2; a++) {
    lo[a] = Math.min(lo[a], xy[2 * i + a]); hi[a] = Math.max(hi[a], xy[2 * i + a]);
  }
  const mid = [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2], M = 14;
  const scale = Math.min((map.width - 2 * M) / (hi[0] - lo[0] || 1), (map.height - 2 * M) / (hi[1] - lo[1] || 1));
  const toCanvas = (u, v) => [map.width / 2 + (u - mid[0]) * scale, map.height / 2 - (v - mid[1]) * scale];
  const fromCanvas = (cx, cy) => [mid[0] + (cx - map.width / 2) / scale, mid[1] - (cy - map.height / 2) / scale];
  const bc = base.getContext("2d");
  bc.fillStyle = "#fff"; bc.fillRect(0, 0, base.width, base.height);
  for (let i = 0; i < n; i++) {
    const [cx, cy] = toCanvas(xy[2 * i], xy[2 * i + 1]);
    bc.fillStyle = COLORS[label[i] % COLORS.length];
    bc.fillRect(cx - 1.5, cy - 1.5, 3, 3);
  }

  function nearest(u, v, k) {  // the k nearest map points: indices and squared distances, closest first
    const best = [], dist = [];
    for (let i = 0; i < n; i++) {
      const du = xy[2 * i] - u, dv = xy[2 * i + 1] - v, q = du * du + dv * dv;
      if (best.length === k && q >= dist[k - 1]) continue;
      let j = Math.min(best.length, k - 1);
      while (j > 0 && dist[j - 1] > q) { best[j] = best[j - 1]; dist[j] = dist[j - 1]; j--; }
      best[j] = i; dist[j] = q;
    }
    return [best, dist];
  }

  const EPS = 1e-6 * ((hi[0] - lo[0]) ** 2 + (hi[1] - lo[1]) ** 2);
  function toLatent(u, v, z) {  // a map point -> a latent: the exact inverse, else the neighbours' mean mu
    if (D.map.P) {
      for (let j = 0; j < d; j++) z[j] = D.map.mean[j] + u * D.map.P[0][j] + v * D.map.P[1][j];
      return z;
    }
    const [best, dist] = nearest(u, v, D.map.k);
    let total = 0;
    z.fill(0);
    for (let m = 0; m < best.length; m++) {
      const wgt = 1 / (dist[m] + EPS);
      total += wgt;
      for (let j = 0; j < d; j++) z[j] += wgt * mu[best[m] * d + j];
    }
    for (let j = 0; j < d; j++) z[j] /= total;
    return z;
  }

  // ---- the current latent, its sliders and its image ----
  const z = new Float64Array(d), inputs = {};
  let cursor = null;
  for (const j of D.sliders) {
    const row = document.createElement("label");
    row.innerHTML = `<span>z${j + 1}</span><input type="range" min="${-RANGE}" max="${RANGE}" step="0.01" value="0">` +
                    `<output>0.00</output>`;
    const input = row.querySelector("input");
    input.addEventListener("input", () => { z[j] = +input.value; show(); });
    inputs[j] = row;
    $("sliders").appendChild(row);
  }

  function show() {  // decode z, draw it, move the sliders to it
    draw($("out"), decode(z));
    for (const j of D.sliders) {
      inputs[j].querySelector("input").value = z[j];
      inputs[j].querySelector("output").textContent = z[j].toFixed(2);
    }
    showTiming();
    drawMap();
  }

  function showTiming() {
    const ms = times.reduce((a, b) => a + b, 0) / times.length;
    $("timing").textContent = `decoded in ${ms.toFixed(2)} ms per frame (mean of the last ${times.length})`;
  }

  function setZ(values) { for (let j = 0; j < d; j++) z[j] = values[j]; show(); }

  // ---- interpolation between two picked test images ----
  const pick = [D.pair[0], D.pair[1]];
  let nextPick = 0, originals = null;
  const muOf = (i) => mu.subarray(i * d, (i + 1) * d);
  function between(t, out) {  // (1 - t) mu(A) + t mu(B)
    const a = muOf(pick[0]), b = muOf(pick[1]);
    for (let j = 0; j < d; j++) out[j] = (1 - t) * a[j] + t * b[j];
    return out;
  }

  function showPicks() {
    const zt = new Float64Array(d), strip = $("strip"), w = strip.width / STEPS;
    for (let s = 0; s < STEPS; s++) draw(strip, decode(between(s / (STEPS - 1), zt)), 1, s * w, w);
    ["a", "b"].forEach((name, m) => {
      $("i" + name).value = index[pick[m]];
      $("c" + name).textContent = D.classes[label[pick[m]]];
      draw($("rec" + name), decode(muOf(pick[m])));
      if (originals) draw($("orig" + name), originals.subarray(pick[m] * PIXELS, (pick[m] + 1) * PIXELS), 255);
    });
    showT();
    drawMap();
  }
  function showT() {
    const t = +$("t").value;
    $("tval").textContent = t.toFixed(2);
    draw($("interp"), decode(between(t, new Float64Array(d))));
    showTiming();
  }

  function choose(m, testIndex) {  // pick test image `testIndex` as end m (0: A, 1: B) if it is on the map
    const i = index.indexOf(testIndex);
    $("pickmsg").textContent = i < 0 ? `test image ${testIndex} is not among the ${n} on the map` : "";
    if (i >= 0) { pick[m] = i; showPicks(); }
  }

  function drawMap() {
    const c = map.getContext("2d");
    c.drawImage(base, 0, 0);
    c.lineWidth = 2;
    c.font = "bold 13px sans-serif";
    pick.forEach((i, m) => {
      const [cx, cy] = toCanvas(xy[2 * i], xy[2 * i + 1]);
      c.strokeStyle = "#000"; c.beginPath(); c.arc(cx, cy, 7, 0, 2 * Math.PI); c.stroke();
      c.fillStyle = "#000"; c.fillText("AB"[m], cx + 8, cy - 8);
    });
    if (cursor) {
      c.strokeStyle = "#d00";
      c.beginPath(); c.moveTo(cursor[0] - 8, cursor[1]); c.lineTo(cursor[0] + 8, cursor[1]);
      c.moveTo(cursor[0], cursor[1] - 8); c.lineTo(cursor[0], cursor[1] + 8); c.stroke();
    }
  }

  // ---- events ----
  const at = (e) => { const r = map.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  let down = null;
  map.addEventListener("pointermove", (e) => { cursor = at(e); setZ(toLatent(...fromCanvas(...cursor), z)); });
  map.addEventListener("pointerdown", (e) => { down = at(e); });
  map.addEventListener("pointerup", (e) => {  // a click (not a drag) picks the nearest test image
    const [cx, cy] = at(e);
    if (down && Math.hypot(cx - down[0], cy - down[1]) < 5) {
      pick[nextPick] = nearest(...fromCanvas(cx, cy), 1)[0][0];
      nextPick = 1 - nextPick;
      $("nextpick").textContent = "AB"[nextPick];
      showPicks();
    }
    down = null;
  });
  $("t").addEventListener("input", showT);
  $("ia").addEventListener("change", () => choose(0, +$("ia").value));
  $("ib").addEventListener("change", () => choose(1, +$("ib").value));
  $("zero").addEventListener("click", () => setZ(new Float64Array(d)));
  $("random").addEventListener("click", () => setZ(Array.from({ length: d }, () =>
    Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random()))));

  // ---- text ----
  document.title = `vaelab explorer: ${D.run}`;
  $("title").textContent = `${D.run}: ${D.title}, ${D.dataset}`;
  const how = D.map.how === "t-SNE"
    ? `a t-SNE of the posterior means of ${n} test images; a t-SNE has no inverse, so a point of the map decodes ` +
      `the mean of the mu of its ${D.map.k} nearest test images, weighted by 1 / distance²`
    : D.map.how === "PCA"
      ? `the first two principal components of the posterior means of ${n} test images; a point of the map ` +
        `decodes z = mean + PC1 u + PC2 v (the other components at the mean)`
      : `the latent itself (the posterior means of ${n} test images); a point of the map is z`;
  $("mapnote").textContent = `The map is ${how}.`;
  D.classes.forEach((c, i) => {
    const key = document.createElement("span");
    key.innerHTML = `<i style="background:${COLORS[i % COLORS.length]}"></i>`;
    key.append(c);  // as text: a class name is never markup
    $("legend").append(key, " ");
  });
  if (D.sliders.length < d) {
    $("slidernote").textContent = `Sliders for the ${D.sliders.length} of ${d} dimensions whose mu varies most ` +
      "over the test images; the others keep their value.";
  }

  // ---- start; the original test images arrive when inflated (the page stays usable meanwhile) ----
  showPicks();
  show();
  async function inflate(b64) {
    const stream = new Blob([bytes(b64)]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  if (typeof DecompressionStream === "function") {
    inflate(P.images).then((a) => { originals = a; showPicks(); document.body.dataset.images = "shown"; },
                           () => { $("pickmsg").textContent = "the original test images could not be read"; });
  }
  window.vaelabExplorer = {  // for tests and measurements
    decode: (values) => Array.from(decode(Float64Array.from(values))), setZ, z, latentDim: d,
    bench(frames) {  // ms per decoded frame: the mean over `frames` decodes of random z, timed as one block
      const zz = new Float64Array(d), t0 = performance.now();  // (the clock ticks in 0.1 ms steps)
      for (let f = 0; f < frames; f++) {
        for (let j = 0; j < d; j++) zz[j] = 2 * Math.random() - 1;
        decode(zz);
      }
      return (performance.now() - t0) / frames;
    },
  };
  document.body.dataset.ready = "yes";
})();
