// matmul_row's step for IQ1_S. A unit is one sub-block of 32 weights (x32 in matmul_row.wgsl): a word of its
// 4 grid indices' low bits and its u16 of their high bits, scale and delta's sign, once for all 32.
const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

alias XU = X32;

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    return x32(u);
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    let o = b + (u >> 3u) * QB;
    let s = u & 7u;
    let qs = w_u32(o + 2u + 4u * s);
    let qh = w_u16(o + 34u + 2u * s);
    let delta = select(0.125, -0.125, (qh & 0x8000u) != 0u);
    let d = iq1_dot8((qs & 0xffu) | ((qh & 7u) << 8u), delta, xu.lo[0], xu.lo[1])
          + iq1_dot8(((qs >> 8u) & 0xffu) | (((qh >> 3u) & 7u) << 8u), delta, xu.lo[2], xu.lo[3])
          + iq1_dot8(((qs >> 16u) & 0xffu) | (((qh >> 6u) & 7u) << 8u), delta, xu.hi[0], xu.hi[1])
          + iq1_dot8((qs >> 24u) | (((qh >> 9u) & 7u) << 8u), delta, xu.hi[2], xu.hi[3]);
    return w_f16(o) * f32(1u + 2u * ((qh >> 12u) & 7u)) * d;
}
