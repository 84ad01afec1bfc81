// matmul_row's step for IQ4_XS. A unit is one sub-block of 32 weights: its 16 bytes (four words;
// blocks of 136 bytes start on multiples of 4), byte i holding weights i (low nibble) and i + 16
// (high), and its 6-bit scale from the block's first two words. The 16 levels are looked up in a
// table in workgroup memory (filled by the first 16 threads before anything else), one load a
// weight where unpacking them from packed bytes costs about eight instructions.

const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = true;

var<workgroup> iq4_lut: array<f32, 16>;

alias XU = X32;

fn step_init(lid: u32) {
    if (lid < 16u) {
        iq4_lut[lid] = levels16(IQ4_LEVELS, vec4<u32>(lid)).x;
    }
}

fn step_x(u: u32) -> XU {
    return x32(u);
}

fn iq4_word(v: u32, xl: vec4<f32>, xh: vec4<f32>) -> f32 {
    let lo = vec4<f32>(iq4_lut[v & 15u], iq4_lut[(v >> 8u) & 15u], iq4_lut[(v >> 16u) & 15u], iq4_lut[(v >> 24u) & 15u]);
    let hi = vec4<f32>(iq4_lut[(v >> 4u) & 15u], iq4_lut[(v >> 12u) & 15u], iq4_lut[(v >> 20u) & 15u], iq4_lut[v >> 28u]);
    return dot(lo, xl) + dot(hi, xh);
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    let w = (b >> 2u) + (u >> 3u) * (QB / 4u);
    let s = u & 7u;
    let w0 = W[w];
    let sc = ((W[w + 1u] >> (4u * s)) & 0xfu) | (((w0 >> (16u + 2u * s)) & 3u) << 4u);
    let q = w + 2u + 4u * s;
    let d = iq4_word(W[q], xu.lo[0], xu.hi[0]) + iq4_word(W[q + 1u], xu.lo[1], xu.hi[1])
          + iq4_word(W[q + 2u], xu.lo[2], xu.hi[2]) + iq4_word(W[q + 3u], xu.lo[3], xu.hi[3]);
    return unpack2x16float(w0).x * (f32(sc) - 32.0) * d;
}
