// matmul_row's step for IQ2_S. A unit is one sub-block of 32 weights (x32 in matmul_row.wgsl): a word of
// its 4 grid indices' low bits, a word of its 4 sign bytes, the byte of their high bits and the byte of
// its two 4-bit scales (one for each 16 weights), each read once.
const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

alias XU = X32;

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    return x32(u);
}

fn iq2s_dot8(qs: u32, qh: u32, sg: u32, j: u32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    let idx = ((qs >> (8u * j)) & 0xffu) | (((qh >> (2u * j)) & 3u) << 8u);
    return grid_dot8(idx, (sg >> (8u * j)) & 0xffu, xa, xb);
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    let o = b + (u >> 3u) * QB;
    let s = u & 7u;
    let qs = w_u32(o + 2u + 4u * s);
    let sg = w_u32(o + 34u + 4u * s);
    let qh = w_u8(o + 66u + s);
    let sc = w_u8(o + 74u + s);
    let a = iq2s_dot8(qs, qh, sg, 0u, xu.lo[0], xu.lo[1]) + iq2s_dot8(qs, qh, sg, 1u, xu.lo[2], xu.lo[3]);
    let c = iq2s_dot8(qs, qh, sg, 2u, xu.hi[0], xu.hi[1]) + iq2s_dot8(qs, qh, sg, 3u, xu.hi[2], xu.hi[3]);
    return w_f16(o) * 0.25 * ((0.5 + f32(sc & 0xfu)) * a + (0.5 + f32(sc >> 4u)) * c);
}
