// The JavaScript twin of mdst/kernels/__init__.py: kernel source composition, the variant
// transform and parameter packing (mdst/kernels/README.md states the rules). Python and this
// file must give byte-identical WGSL and parameter blocks; tests/test_oracle.py checks that
// under node on every kernel source, and the browser harness checks the packing on a whole plan.

export const PRECISION_LINE = "alias half = f32;";
// Python's `^\s*enable\s+([a-z0-9_, ]+);\s*$` with re.M. JavaScript's multiline ^ and $ also
// treat "\r" as a line end and Python's do not, so line starts and ends are spelled out.
const ENABLE = /(?<=^|\n)\s*enable\s+([a-z0-9_, ]+);\s*(?=\n|$)/g;

// Kernels whose inner step a weight type may replace, and the types that do.
export const TYPE_STEPS = {
  matmul_row: ["Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S",
               "IQ1_S", "IQ1_M", "MXFP4", "TQ1_0", "TQ2_0"],
};

// Weight types whose blocks are whole 16-byte words, read through weights_vec4.wgsl.
export const WIDE_TYPES = ["Q4_K", "Q5_K"];

// Weight types that look weights up in a grid: quant/grid.wgsl comes before the type's quant file, and
// their kernels bind the grid (an input of the oracle's cases and plan) as group 1.
export const GRID_TYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"];

// The kernel's source before the variant transform: common.wgsl, then (for kernels that read a
// weight tensor) weights.wgsl (weights_vec4.wgsl for WIDE_TYPES), quant/grid.wgsl for GRID_TYPES, quant/<wtype>.wgsl and, for kernels in TYPE_STEPS, the type's step
// quant/<wtype>.<name>.wgsl or the generic quant/<name>.wgsl (and quant/<name>.whole.wgsl after a step that
// defines no `fn step_w(`), then (for kernels that use a KV
// cache) kv/<kv>.wgsl, then <name>.wgsl, joined with "\n".
// readText(relativePath) returns a file of the kernels folder as text.
export async function compose(readText, name, wtype = null, kv = null) {
  const parts = [await readText("common.wgsl")];
  if (wtype !== null && wtype !== undefined) {
    parts.push(await readText(WIDE_TYPES.includes(wtype) ? "weights_vec4.wgsl" : "weights.wgsl"));
    if (GRID_TYPES.includes(wtype)) parts.push(await readText("quant/grid.wgsl"));
    parts.push(await readText(`quant/${wtype}.wgsl`));
    const steps = Object.hasOwn(TYPE_STEPS, name) ? TYPE_STEPS[name] : null;
    if (steps) {
      const step = await readText(steps.includes(wtype) ? `quant/${wtype}.${name}.wgsl` : `quant/${name}.wgsl`);
      parts.push(step);
      if (!step.includes("fn step_w(")) parts.push(await readText(`quant/${name}.whole.wgsl`));
    }
  }
  if (kv !== null && kv !== undefined) parts.push(await readText(`kv/${kv}.wgsl`));
  parts.push(await readText(`${name}.wgsl`));
  return parts.join("\n");
}

// The one source transform: hoist `enable X;` lines (in order, without repeats), switch the
// precision line for f16 (adding `enable f16;` first), drop `subgroups` for Naga.
export function variant(source, { f16, compiler }) {
  if (compiler !== "naga" && compiler !== "tint") {
    throw new Error(`compiler must be 'naga' or 'tint', got ${JSON.stringify(compiler)}`);
  }
  let enables = [];
  for (const m of source.matchAll(ENABLE)) {
    for (const ext of m[1].replaceAll(" ", "").split(",")) {
      if (ext && !enables.includes(ext)) enables.push(ext);
    }
  }
  let body = source.replace(ENABLE, "");
  if (f16) {
    if (!body.includes(PRECISION_LINE)) throw new Error("source has no precision line to rewrite");
    body = body.replaceAll(PRECISION_LINE, "alias half = f16;");
    if (!enables.includes("f16")) enables.unshift("f16");
  }
  if (compiler === "naga") enables = enables.filter((e) => e !== "subgroups");
  return enables.map((e) => `enable ${e};\n`).join("") + body;
}

// Field names and types of the uniform `struct P` declared in a kernel's own .wgsl file.
export function paramFields(kernelFileText) {
  const m = /struct\s+P\s*\{([^}]*)\}/.exec(kernelFileText);
  if (!m) return [];
  const body = m[1].replace(/\/\/[^\n]*/g, "") + ",";
  return [...body.matchAll(/(\w+)\s*:\s*(u32|i32|f32)\s*,/g)].map((f) => [f[1], f[2]]);
}

// P's fields packed little-endian in declaration order, padded to 16 bytes.
export function packParams(name, fields, values) {
  const known = new Set(fields.map(([f]) => f));
  const missing = fields.map(([f]) => f).filter((f) => !(f in values));
  const extra = Object.keys(values).filter((k) => !known.has(k));
  if (missing.length || extra.length) {
    throw new Error(`kernel ${name}: missing params ${JSON.stringify(missing)}, unknown params ${JSON.stringify(extra)}`);
  }
  const bytes = new Uint8Array(Math.ceil((4 * fields.length) / 16) * 16);
  const view = new DataView(bytes.buffer);
  fields.forEach(([f, type], i) => {
    const v = values[f];
    if (type === "u32") view.setUint32(4 * i, v, true);
    else if (type === "i32") view.setInt32(4 * i, v, true);
    else view.setFloat32(4 * i, v, true);
  });
  return bytes;
}

// readText(path) with each file read once (fetch in the browser, the file system under node).
export function kernelFiles(readText) {
  const cache = new Map();
  return (path) => {
    if (!cache.has(path)) cache.set(path, readText(path));
    return cache.get(path);
  };
}
