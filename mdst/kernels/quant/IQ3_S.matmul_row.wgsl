// matmul_row's step for IQ3_S. A unit is one sub-block of 32 weights (x32 in matmul_row.wgsl): its 8 grid
// index bytes in one read, the byte of their ninth bits, a word of its 4 sign bytes and its 4-bit scale,
// once for all 32.
const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

alias XU = X32;

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    return x32(u);
}

// Groups 2j, 2j + 1 of the unit: index bytes 2j, 2j + 1 of the unit's 8 (q: the word holding them), ninth bits
// 2j, 2j + 1 of qh, sign byte j of sg; against x's groups xa, xb.
fn iq3s_dot8(q: u32, qh: u32, sg: u32, j: u32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    let h = 16u * (j & 1u);
    let i0 = ((q >> h) & 0xffu) | (((qh >> (2u * j)) & 1u) << 8u);
    let i1 = ((q >> (h + 8u)) & 0xffu) | (((qh >> (2u * j + 1u)) & 1u) << 8u);
    let s = (sg >> (8u * j)) & 0xffu;
    return dot(signed4(grid4(i0), s, 0u), xa) + dot(signed4(grid4(i1), s, 1u), xb);
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    let o = b + (u >> 3u) * QB;
    let s = u & 7u;
    let q = w_u32x2(o + 2u + 8u * s);
    let qh = w_u8(o + 66u + s);
    let sg = w_u32(o + 74u + 4u * s);
    let sc = (w_u8(o + 106u + (s >> 1u)) >> (4u * (s & 1u))) & 0xfu;
    let d = iq3s_dot8(q.x, qh, sg, 0u, xu.lo[0], xu.lo[1]) + iq3s_dot8(q.x, qh, sg, 1u, xu.lo[2], xu.lo[3])
          + iq3s_dot8(q.y, qh, sg, 2u, xu.hi[0], xu.hi[1]) + iq3s_dot8(q.y, qh, sg, 3u, xu.hi[2], xu.hi[3]);
    return w_f16(o) * f32(1u + 2u * sc) * d;
}
