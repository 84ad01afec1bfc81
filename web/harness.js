// Runs an mdst oracle directory (README.md in this folder documents it) through navigator.gpu:
// every kernel case, then the replay of one decode step. Returns the same report as Python's
// mdst.dev.oracle.check() does for wgpu-native. No dependencies, no bundler.

import { compose, kernelFiles, packParams, paramFields, variant } from "./kernels.js";

const COMPILER = "tint"; // browsers compile WGSL with Tint (Chromium) or Naga (Firefox); the
// transform keeps `enable subgroups;` for Tint, which needs it.

// ---- comparison: the same rule as mdst.dev.oracle.compare --------------------------------------
export function compare(actual, expect, dtype, rule) {
  if (actual.byteLength !== expect.byteLength) {
    return { ok: false, error: `${actual.byteLength} bytes, expected ${expect.byteLength}` };
  }
  if (dtype !== "f32") {
    const a = new Uint32Array(actual), e = new Uint32Array(expect);
    let bad = 0;
    for (let i = 0; i < a.length; i++) if (a[i] !== e[i]) bad++;
    return { ok: bad === 0, mismatches: bad };
  }
  const a = new Float32Array(actual), e = new Float32Array(expect);
  let nanMismatch = 0, mismatches = 0, num = 0, den = 0, maxAbs = 0, finite = true, n = 0;
  for (let i = 0; i < a.length; i++) {
    const expectNaN = Number.isNaN(e[i]);
    if (Number.isNaN(a[i]) !== expectNaN) nanMismatch++;
    if (expectNaN) continue; // an element that must stay unwritten (its poison is NaN)
    n++;
    const d = a[i] - e[i];
    if (!Number.isFinite(d)) finite = false;
    if (d !== 0) mismatches++;
    num += d * d;
    den += e[i] * e[i];
    maxAbs = Math.max(maxAbs, Math.abs(d));
  }
  const out = { nan_mismatch: nanMismatch };
  if (rule.exact) {
    out.mismatches = mismatches;
    out.ok = nanMismatch === 0 && mismatches === 0;
  } else {
    out.rel_l2 = finite ? Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30) : Infinity;
    out.ok = nanMismatch === 0 && out.rel_l2 <= rule.rel_l2;
  }
  if (n) out.max_abs = finite ? maxAbs : Infinity;
  return out;
}

// ---- loading ------------------------------------------------------------------------------
function joinUrl(base, path) {
  return new URL(path, new URL(base, location.href)).href;
}

async function fetchOk(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${url}: ${r.status}`);
  return r;
}

class Oracle {
  constructor(oracleUrl, kernelsUrl, device) {
    this.oracleUrl = oracleUrl;
    this.device = device;
    this.readKernel = kernelFiles(async (p) => (await fetchOk(joinUrl(kernelsUrl, p))).text());
    this.blobs = new Map();
    this.pipelines = new Map();
  }

  async manifest() {
    const m = await (await fetchOk(joinUrl(this.oracleUrl, "oracle.json"))).json();
    if (m.format !== "mdst-oracle" || m.version !== 1) throw new Error("not an mdst-oracle v1 manifest");
    return m;
  }

  blob(ref) {
    if (!this.blobs.has(ref.file)) {
      this.blobs.set(ref.file, fetchOk(joinUrl(this.oracleUrl, ref.file)).then(async (r) => {
        const data = await r.arrayBuffer();
        if (data.byteLength !== ref.bytes) throw new Error(`${ref.file}: ${data.byteLength} bytes, manifest says ${ref.bytes}`);
        return data;
      }));
    }
    return this.blobs.get(ref.file);
  }

  // The final WGSL of a specialization, as mdst.kernels.source(spec, "tint") builds it.
  async source(spec) {
    return variant(await compose(this.readKernel, spec.kernel, spec.wtype, spec.kv ?? null), { f16: spec.f16, compiler: COMPILER });
  }

  async fields(kernel) {
    return paramFields(await this.readKernel(`${kernel}.wgsl`));
  }

  // The compute pipeline of a specialization; shader compilation errors become exceptions.
  pipeline(spec) {
    const key = `${spec.key}`;
    if (!this.pipelines.has(key)) {
      this.pipelines.set(key, (async () => {
        const module = this.device.createShaderModule({ label: key, code: await this.source(spec) });
        const info = await module.getCompilationInfo();
        const errors = info.messages.filter((m) => m.type === "error");
        if (errors.length) throw new Error(`${key}: ${errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("; ")}`);
        return this.device.createComputePipelineAsync({
          label: key, layout: "auto", compute: { module, entryPoint: "main", constants: spec.constants },
        });
      })());
    }
    return this.pipelines.get(key);
  }

  storage(size, init, label) {
    const GB = GPUBufferUsage;
    const buf = this.device.createBuffer({ label, size, usage: GB.STORAGE | GB.COPY_SRC | GB.COPY_DST });
    if (init) this.device.queue.writeBuffer(buf, 0, init);
    return buf;
  }

  uniform(bytes, label) {
    const buf = this.device.createBuffer({ label, size: bytes.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    this.device.queue.writeBuffer(buf, 0, bytes);
    return buf;
  }
}

// Copies regions into mappable buffers inside `encoder`; read() then returns their bytes.
class Readback {
  constructor(device) {
    this.device = device;
    this.regions = [];
  }

  copy(encoder, buffer, offset, size) {
    const staging = this.device.createBuffer({ size: Math.ceil(size / 4) * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.copyBufferToBuffer(buffer, offset, staging, 0, Math.ceil(size / 4) * 4);
    this.regions.push({ staging, size });
    return this.regions.length - 1;
  }

  async read() {
    return Promise.all(this.regions.map(async ({ staging, size }) => {
      await staging.mapAsync(GPUMapMode.READ);
      const data = staging.getMappedRange().slice(0, size);
      staging.destroy();
      return data;
    }));
  }
}

async function withErrors(device, fn) {
  device.pushErrorScope("internal");
  device.pushErrorScope("out-of-memory");
  device.pushErrorScope("validation");
  let value, thrown;
  try {
    value = await fn();
  } catch (e) {
    thrown = e;
  }
  const errors = (await Promise.all([device.popErrorScope(), device.popErrorScope(), device.popErrorScope()])).filter(Boolean);
  if (thrown) throw thrown;
  if (errors.length) throw new Error(errors.map((e) => e.message).join("; "));
  return value;
}

// ---- kernel cases -------------------------------------------------------------------------
async function runCase(o, c) {
  const device = o.device;
  const buffers = [];
  const outputs = [];
  try {
    return await withErrors(device, async () => {
      const pipeline = await o.pipeline(c);
      for (const [i, b] of c.bindings.entries()) {
        if (b.input) {
          buffers.push(o.storage(b.input.bytes, await o.blob(b.input), `in${i}`));
          continue;
        }
        const size = Math.max(4, Math.ceil(b.output.bytes / 4) * 4);
        const init = b.output.init ? await o.blob(b.output.init) : new Uint32Array(size / 4).fill(0xffffffff);
        buffers.push(o.storage(size, init, `out${i}`));
        outputs.push({ buffer: buffers[buffers.length - 1], bytes: b.output.bytes, expect: b.expect });
      }
      buffers.push(o.uniform(packParams(c.kernel, await o.fields(c.kernel), c.params), "params"));
      const group = device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      if (c.grid) {
        // a grid type's grid: group 1 (mdst/kernels/quant/grid.wgsl)
        const grid = o.storage(c.grid.bytes, await o.blob(c.grid), "grid");
        buffers.push(grid);
        pass.setBindGroup(1, device.createBindGroup({
          layout: pipeline.getBindGroupLayout(1), entries: [{ binding: 0, resource: { buffer: grid } }] }));
      }
      pass.dispatchWorkgroups(...c.workgroups);
      pass.end();
      const rb = new Readback(device);
      for (const out of outputs) rb.copy(enc, out.buffer, 0, out.bytes);
      device.queue.submit([enc.finish()]);
      const got = await rb.read();
      const results = await Promise.all(outputs.map(async (out, k) =>
        compare(got[k], await o.blob(out.expect), out.expect.dtype, out.expect.compare)));
      return { id: c.id, ok: results.every((r) => r.ok), outputs: results };
    });
  } catch (e) {
    return { id: c.id, ok: false, error: String(e && e.message ? e.message : e) };
  } finally {
    for (const b of buffers) b.destroy();
  }
}

// ---- plan replay --------------------------------------------------------------------------
async function replay(o, plan) {
  const device = o.device;
  const align = device.limits.minUniformBufferOffsetAlignment;
  const buffers = [];
  try {
    return await withErrors(device, async () => {
      for (const b of plan.buffers) {
        const init = b.init ? await o.blob(b.init) : null;
        if (b.usage === "uniform") {
          const bytes = new Uint8Array(b.size);
          if (init) bytes.set(new Uint8Array(init));
          buffers.push(o.uniform(bytes, b.label));
        } else {
          buffers.push(o.storage(b.size, init, b.label));
        }
      }
      // The exported parameter block must be what this side packs from each dispatch's params.
      const packing = { checked: 0, mismatches: [] };
      const dispatches = [];
      for (const [i, d] of plan.dispatches.entries()) {
        const p = d.bindings[d.bindings.length - 1];
        if (p.offset % align) throw new Error(`dispatch ${i}: parameter offset ${p.offset} is not a multiple of ${align}`);
        const mine = packParams(d.kernel, await o.fields(d.kernel), d.params);
        const theirs = new Uint8Array(await o.blob(plan.buffers[p.buffer].init), p.offset, p.size);
        packing.checked++;
        if (mine.length !== theirs.length || mine.some((v, k) => v !== theirs[k])) packing.mismatches.push(i);
        const pipeline = await o.pipeline(d);
        const entry = (e, binding) => ({ binding, resource: { buffer: buffers[e.buffer], offset: e.offset, size: e.size } });
        const groups = [device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: d.bindings.map(entry) })];
        if (d.grid) groups.push(device.createBindGroup({ layout: pipeline.getBindGroupLayout(1), entries: [entry(d.grid, 0)] }));
        dispatches.push({ pipeline, groups, workgroups: d.workgroups });
      }
      // One encoder: compute passes split where a tapped activation is copied out.
      const enc = device.createCommandEncoder();
      const rb = new Readback(device);
      const encodeRange = (start, end) => {
        if (start === end) return;
        const pass = enc.beginComputePass();
        for (const d of dispatches.slice(start, end)) {
          pass.setPipeline(d.pipeline);
          d.groups.forEach((g, i) => pass.setBindGroup(i, g));
          pass.dispatchWorkgroups(...d.workgroups);
        }
        pass.end();
      };
      const taps = [...plan.taps].sort((a, b) => a.after - b.after);
      let done = 0;
      const tapSlots = taps.map((t) => {
        encodeRange(done, t.after);
        done = t.after;
        return rb.copy(enc, buffers[t.buffer], t.offset, t.bytes);
      });
      encodeRange(done, dispatches.length);
      const rows = plan.logits.rows;
      const partSlots = plan.logits.parts.map((p) => rb.copy(enc, buffers[p.buffer], 0, rows * p.cols * 4));
      const tokenSlot = plan.token ? rb.copy(enc, buffers[plan.token.buffer], 0, 4) : null;
      device.queue.submit([enc.finish()]);
      const got = await rb.read();

      const tapResults = await Promise.all(taps.map(async (t, k) =>
        ({ name: t.name, ...compare(got[tapSlots[k]], await o.blob(t.expect), "f32", t.compare) })));
      // Logits [rows, vocab] from the parts' [rows, cols] blocks.
      const vocab = plan.logits.parts.reduce((s, p) => s + p.cols, 0);
      const logits = new Float32Array(rows * vocab);
      plan.logits.parts.forEach((p, k) => {
        const part = new Float32Array(got[partSlots[k]]);
        for (let r = 0; r < rows; r++) logits.set(part.subarray(r * p.cols, (r + 1) * p.cols), r * vocab + p.col0);
      });
      const result = {
        logits: compare(logits.buffer, await o.blob(plan.logits.expect), "f32", plan.logits.compare),
        taps: tapResults,
        param_packing: { checked: packing.checked, mismatches: packing.mismatches, ok: packing.mismatches.length === 0 },
      };
      if (tokenSlot !== null) {
        const token = new Uint32Array(got[tokenSlot])[0];
        result.token = { got: token, expect: plan.token.expect, ok: token === plan.token.expect };
      }
      result.ok = result.logits.ok && tapResults.every((t) => t.ok) && result.param_packing.ok && (result.token ? result.token.ok : true);
      return result;
    });
  } catch (e) {
    return { ok: false, error: String(e && e.message ? e.message : e) };
  } finally {
    for (const b of buffers) b.destroy();
  }
}

// ---- entry point --------------------------------------------------------------------------
// options: oracleUrl (folder of oracle.json), kernelsUrl (mdst/kernels/ folder).
export async function runOracle({ oracleUrl, kernelsUrl }) {
  if (!navigator.gpu) throw new Error("navigator.gpu is missing: this browser has no WebGPU");
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error("navigator.gpu.requestAdapter() returned null (Chromium on Linux needs --enable-unsafe-webgpu)");
  // Plans bind up to 128 MiB (mdst writes oracles for that limit); ask for what the adapter has.
  const requiredLimits = {};
  for (const k of ["maxStorageBufferBindingSize", "maxBufferSize"]) requiredLimits[k] = adapter.limits[k];
  const device = await adapter.requestDevice({ requiredLimits });
  const lost = [];
  device.lost.then((info) => lost.push(info.message));
  const o = new Oracle(oracleUrl, kernelsUrl, device);
  const manifest = await o.manifest();
  const info = adapter.info || {};
  const started = performance.now();
  const cases = [];
  for (const c of manifest.cases) cases.push(await runCase(o, c));
  const report = {
    engine: `${navigator.userAgent.match(/Chrom\w+\/[\d.]+/)?.[0] ?? navigator.userAgent} (${info.vendor} ${info.architecture})`,
    adapter: { vendor: info.vendor, architecture: info.architecture, description: info.description, features: [...adapter.features] },
    model: manifest.model,
    cases,
    passed: cases.filter((c) => c.ok).length,
    failed: cases.filter((c) => !c.ok).length,
  };
  if (manifest.plan) report.replay = await replay(o, manifest.plan);
  report.seconds = (performance.now() - started) / 1000;
  if (lost.length) report.device_lost = lost;
  device.destroy();
  return report;
}
