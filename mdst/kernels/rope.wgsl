// Rotary position embedding, in place on x [rows, heads, head_dim], for the first n_rot
// dimensions of each head. Pair i rotates by theta = pos * freq[i]; `freq` already folds in
// the base, frequency scaling, YaRN's ramp and per-pair frequency factors (computed once on
// the CPU in float64). Normal ordering pairs (2i, 2i+1); NeoX ordering pairs (i, i + n_rot/2).
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

// sin and cos are only accurate near zero on some GPUs: reduce the angle first
// (2*pi split in two parts so that k * 6.28125 is exact).
fn reduce_angle(t: f32) -> f32 {
    let k = round(t * 0.15915494309189535);
    return (t - k * 6.28125) - k * 0.0019353071795864769;
}

// (sin t, cos t) for t in [-pi, pi], to about 1e-7 on every implementation: WGSL promises only
// an absolute error of 2^-11 for the builtins, and SwiftShader (Chromium without a GPU) comes
// near that. t is reduced to r in [-pi/4, pi/4] around q * pi/2 (pi/2 split in two parts),
// the minimax polynomials of Cephes' sinf/cosf give sin r and cos r, and the quadrant q
// rotates them.
fn sin_cos(t: f32) -> vec2<f32> {
    let q = round(t * 0.6366197723675814);
    let r = (t - q * 1.5703125) - q * 0.00048382679489661923;
    let r2 = r * r;
    let s = r + r * r2 * (-0.16666654611 + r2 * (0.0083321608736 - r2 * 0.00019515295891));
    let c = 1.0 - 0.5 * r2 + r2 * r2 * (0.04166664568298827 + r2 * (-0.001388731625493765 + r2 * 0.00002443315711809948));
    switch (i32(q) & 3) {
        case 1: { return vec2<f32>(c, -s); }
        case 2: { return vec2<f32>(-s, -c); }
        case 3: { return vec2<f32>(-c, s); }
        default: { return vec2<f32>(s, c); }
    }
}

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
    let sc = sin_cos(reduce_angle(f32(step[STEP_POS0] + r) * freq[i])) * p.mscale;
    let s = sc.x;
    let c = sc.y;
    let base = (r * p.heads + h) * p.head_dim;
    var a = base + 2u * i;
    var b = a + 1u;
    if (p.neox != 0u) {
        a = base + i;
        b = a + pairs;
    }
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}
