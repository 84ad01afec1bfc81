// Rotary position embedding, in place on x [rows, heads, head_dim], for the first n_rot
// dimensions of each head. Pair i rotates by theta = pos * freq[i]; `freq` already folds in
// the base, frequency scaling, YaRN's ramp and per-pair frequency factors (computed once on
// the CPU in float64). Normal ordering pairs (2i, 2i+1); NeoX ordering pairs (i, i + n_rot/2).
// Row r is activation row row0 + r (STEP_ROW0); POOL (a batched step): its position comes from the step's
// table (STEP_SEQS).
// Dispatch: (ceil(heads * n_rot / 2 / WG), rows).

struct P {
    heads: u32,
    head_dim: u32,
    n_rot: u32,
    neox: u32,
    mscale: f32,     // YaRN magnitude scaling (1 without YaRN)
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> freq: array<f32>;     // [n_rot / 2]
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 64u;
override POOL: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pairs = p.n_rot / 2u;
    let e = wid.x * WG + lid;
    if (e >= p.heads * pairs) {
        return;
    }
    let r = wid.y;
    let h = e / pairs;
    let i = e % pairs;
    let ab = ((step[STEP_ROW0] + r) * p.heads + h) * p.head_dim + rope_pair(i, p.n_rot, p.neox);
    var pos = step[STEP_POS0] + r;
    if (POOL) {
        pos = step[step[STEP_SEQS] + 2u * r];
    }
    let o = rotate_pair(vec2<f32>(x[ab.x], x[ab.y]), pos, freq[i], p.mscale);
    x[ab.x] = o.x;
    x[ab.y] = o.y;
}
