// Shared by every kernel (prepended by the loader; see README.md).

// The precision line. The f16 variant rewrites it to `alias half = f16;` and adds `enable f16;`.
// `half` is the storage type of the KV cache and of other tensors kept at reduced precision.
alias half = f32;

// Gated activations (glu, and matmuls with a fused GLU), by the host's ACT/GLU override.
// tanh's argument is clamped: some drivers compute tanh through exp and overflow.
const ACT_SILU: u32 = 1u;
const ACT_GELU_TANH: u32 = 2u;
fn activate(kind: u32, g: f32) -> f32 {
    if (kind == ACT_SILU) {
        return g / (1.0 + exp(-g));
    }
    let t = clamp(0.7978845608028654 * (g + 0.044715 * g * g * g), -15.0, 15.0);
    return 0.5 * g * (1.0 + tanh(t));
}

// An attention score softly capped at +-cap (Gemma 2's logit softcapping; cap 0: none); tanh's argument is
// clamped as in activate().
fn softcapped(s: f32, cap: f32) -> f32 {
    if (cap > 0.0) {
        return cap * tanh(clamp(s / cap, -15.0, 15.0));
    }
    return s;
}

// sin and cos are only accurate near zero on some GPUs: reduce the angle first
// (2*pi split in two parts so that k * 6.28125 is exact).
fn reduce_angle(t: f32) -> f32 {
    let k = round(t * 0.15915494309189535);
    return (t - k * 6.28125) - k * 0.0019353071795864769;
}

// RoPE's pair i among a head's first n_rot dims: (2i, 2i + 1), or (i, i + n_rot / 2) in NeoX order.
fn rope_pair(i: u32, n_rot: u32, neox: u32) -> vec2<u32> {
    if (neox != 0u) {
        return vec2<u32>(i, i + n_rot / 2u);
    }
    return vec2<u32>(2u * i, 2u * i + 1u);
}

// Pair i of a head at position pos, (x0, x1), rotated by pos * freq (freq: RoPE's table of the pairs'
// frequencies) and scaled by mscale.
fn rotate_pair(x: vec2<f32>, pos: u32, freq: f32, mscale: f32) -> vec2<f32> {
    let cs = sin_cos(reduce_angle(f32(pos) * freq)) * mscale;
    return vec2<f32>(x.x * cs.y - x.y * cs.x, x.x * cs.x + x.y * cs.y);
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

// A workgroup's best (value, index) pair, at every thread: the highest value, ties to the lower index, index
// NONE_ID (no candidate) last. The greedy pick, top-k, sampling and the router choose by it. `n` is the workgroup's
// size, a power of two of at most PICK_WG; call it from uniform control flow (it has barriers).
const NONE_ID: u32 = 0xffffffffu;
const PICK_WG: u32 = 256u;
var<workgroup> pick_v: array<f32, PICK_WG>;
var<workgroup> pick_i: array<u32, PICK_WG>;

struct Pick {
    v: f32,
    i: u32,
}

// Whether (s, e) ranks before (t, f).
fn ranks_before(s: f32, e: u32, t: f32, f: u32) -> bool {
    return e != NONE_ID && (f == NONE_ID || s > t || (s == t && e < f));
}

fn pick_best(v: f32, i: u32, lid: u32, n: u32) -> Pick {
    pick_v[lid] = v;
    pick_i[lid] = i;
    workgroupBarrier();
    for (var s = n / 2u; s > 0u; s >>= 1u) {
        if (lid < s && ranks_before(pick_v[lid + s], pick_i[lid + s], pick_v[lid], pick_i[lid])) {
            pick_v[lid] = pick_v[lid + s];
            pick_i[lid] = pick_i[lid + s];
        }
        workgroupBarrier();
    }
    let top = Pick(pick_v[0], pick_i[0]);
    workgroupBarrier();   // all have read it before the next pick writes
    return top;
}

// Workgroups beyond MAX_GROUPS in x spill into y; this gives the flat index. (The host reads
// MAX_GROUPS, like every constant it shares with the kernels, from this source.)
const MAX_GROUPS: u32 = 65535u;
fn flat_wg(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// The per-step buffer (`step`, array<u32>) holds [pos0, n_rows, row0, seqs, token ids...] and is
// written once per step. pos0 is the position of the step's first row; rows at and past
// n_rows are padding of a plan compiled for more rows. row0 is where the rows sit in the
// activations: 0, except in a batched step's per-sequence dispatches (a sequence's own state:
// the short convolution, a draw), which run with that sequence's own step words (its position,
// one row, its row of the batch). A batched step's rows are one token each of different
// sequences: its table at word `seqs` holds each row's (position, slot of the KV pool), which
// the cache's kernels read when compiled with POOL.
const STEP_POS0: u32 = 0u;
const STEP_ROWS: u32 = 1u;
const STEP_ROW0: u32 = 2u;
const STEP_SEQS: u32 = 3u;
const STEP_TOKENS: u32 = 4u;

// The draw buffer (`draw`, array<u32>) of a sampled step, written by the host with the step
// (mdst.text.sampling.Draw.encode): settings as f32/u32 words, then the distinct recent tokens and
// their counts for the repetition penalties, then the logit-bias tokens and their biases; a
// constrained draw (DRAW_MASKED = 1) then its grammar's bitmask of allowed tokens (draw_allows).
const DRAW_TEMPERATURE: u32 = 0u;
const DRAW_TOP_P: u32 = 1u;
const DRAW_MIN_P: u32 = 2u;
const DRAW_U: u32 = 3u;
const DRAW_TOP_K: u32 = 4u;
const DRAW_N_HIST: u32 = 5u;
const DRAW_REPEAT: u32 = 6u;
const DRAW_PRESENCE: u32 = 7u;
const DRAW_FREQUENCY: u32 = 8u;
const DRAW_N_BIAS: u32 = 9u;
const DRAW_MASKED: u32 = 10u;
const DRAW_HIST: u32 = 16u;
const DRAW_COUNTS: u32 = 80u;
const DRAW_BIAS_IDS: u32 = 144u;
const DRAW_BIAS: u32 = 208u;
const KMAX: u32 = 64u;   // the most candidates GPU sampling keeps (top_k), tokens in its penalty window, biased tokens
const DRAW_WORDS: u32 = 272u;   // the fixed words (DRAW_BIAS + KMAX); a constrained draw's bitmask follows

// Whether a constrained draw allows token t, given the bitmask's word draw[DRAW_WORDS + t / 32]: its
// bit t % 32 (llguidance's layout; ceil(n_vocab / 32) words). A picking kernel treats a token it forbids
// as -inf, so it is never chosen.
fn draw_allows(mask_word: u32, t: u32) -> bool {
    return ((mask_word >> (t & 31u)) & 1u) != 0u;
}

// 8-bit activations (reference.q8_round_trip): (d, 1 / d or 0) of a 32-value block whose absolute
// values' componentwise max is m, d = amax / 127.
fn q8_scales(m: vec4<f32>) -> vec2<f32> {
    let d = max(max(m.x, m.y), max(m.z, m.w)) / 127.0;
    return vec2<f32>(d, select(0.0, 1.0 / d, d > 0.0));
}

// Byte decoders for the weight types (quant/*.wgsl). The four bytes of v as signed integers.
fn i8x4(v: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(v << 24u, v << 16u, v << 8u, v)) >> vec4<u32>(24u));
}

// The four bytes of v as unsigned integers.
fn u8x4(v: u32) -> vec4<u32> {
    return (vec4<u32>(v) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
}

// The 4 bytes of v (each below 256) as floats, byte i in component i. Built from
// exponent bits rather than converted: each byte pair goes into the mantissas of two f16 values
// 1024 + b (exact: f16 counts in ones from 1024 to 2048), which unpack2x16float widens.
fn ub4(v: u32) -> vec4<f32> {
    let a = unpack2x16float((v & 0x00ff00ffu) | 0x64006400u) - 1024.0;           // bytes 0, 2
    let b = unpack2x16float(((v >> 8u) & 0x00ff00ffu) | 0x64006400u) - 1024.0;   // bytes 1, 3
    return vec4<f32>(a.x, b.x, a.y, b.y);
}
