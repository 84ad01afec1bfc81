// matmul_row's step for IQ1_M. A unit is one sub-block of 32 weights (x32 in matmul_row.wgsl): a word of its
// 4 grid indices' low bits, a u16 of their nibbles (high bits, delta's sign) and the block's scale words (two
// 3-bit scales for the unit, d from their top nibbles), once for all 32.
const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

alias XU = X32;

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    return x32(u);
}

// Entry j of the unit: low index bits qs, nibble j of qh; against x's groups xa, xb.
fn iq1m_dot8(qs: u32, qh: u32, j: u32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    let nib = qh >> (4u * j);
    return iq1_dot8(((qs >> (8u * j)) & 0xffu) | ((nib & 7u) << 8u), select(0.125, -0.125, (nib & 8u) != 0u), xa, xb);
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    let o = b + (u >> 3u) * QB;
    let s = u & 7u;
    let qs = w_u32(o + 4u * s);
    let qh = w_u16(o + 32u + 2u * s);
    let sc = w_u32x2(o + 48u);
    let d = unpack2x16float(((sc.x >> 12u) & 0xfu) | ((sc.x >> 24u) & 0xf0u) | ((sc.y >> 4u) & 0xf00u)
                            | ((sc.y >> 16u) & 0xf000u)).x;
    let sw = (select(sc.x, sc.y, s >= 4u) >> (16u * ((s >> 1u) & 1u))) >> (6u * (s & 1u));
    let a = iq1m_dot8(qs, qh, 0u, xu.lo[0], xu.lo[1]) + iq1m_dot8(qs, qh, 1u, xu.lo[2], xu.lo[3]);
    let c = iq1m_dot8(qs, qh, 2u, xu.hi[0], xu.hi[1]) + iq1m_dot8(qs, qh, 3u, xu.hi[2], xu.hi[3]);
    return d * (f32(1u + 2u * (sw & 7u)) * a + f32(1u + 2u * ((sw >> 3u) & 7u)) * c);
}
