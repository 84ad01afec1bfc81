// matmul_row's step for IQ3_XXS. A unit is one sub-block of 32 weights (x32 in matmul_row.wgsl): its 8
// grid indices in one read and its word of 4 sign indices and the scale, once for all 32.
const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

alias XU = X32;

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    return x32(u);
}

// Groups i0, i1 (grid indices) sharing the 8 signs s, against x's groups xa, xb.
fn iq3xxs_dot8(i0: u32, i1: u32, s: u32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    return dot(signed4(grid4(i0), s, 0u), xa) + dot(signed4(grid4(i1), s, 1u), xb);
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    let o = b + (u >> 3u) * QB;
    let s = u & 7u;
    let q = w_u32x2(o + 2u + 8u * s);
    let aux = w_u32(o + 66u + 4u * s);
    let d = iq3xxs_dot8(q.x & 0xffu, (q.x >> 8u) & 0xffu, ksigns(aux & 0x7fu), xu.lo[0], xu.lo[1])
          + iq3xxs_dot8((q.x >> 16u) & 0xffu, q.x >> 24u, ksigns((aux >> 7u) & 0x7fu), xu.lo[2], xu.lo[3])
          + iq3xxs_dot8(q.y & 0xffu, (q.y >> 8u) & 0xffu, ksigns((aux >> 14u) & 0x7fu), xu.hi[0], xu.hi[1])
          + iq3xxs_dot8((q.y >> 16u) & 0xffu, q.y >> 24u, ksigns((aux >> 21u) & 0x7fu), xu.hi[2], xu.hi[3]);
    return w_f16(o) * (0.5 + f32(aux >> 28u)) * 0.5 * d;
}
