// matmul_row's step for IQ2_XS. A unit is one sub-block of 32 weights (x32 in matmul_row.wgsl): its 4
// u16 (grid and sign indices) in one read and its byte of two 4-bit scales (one for each 16 weights).
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
    let q = w_u32x2(o + 2u + 8u * s);
    let sc = w_u8(o + 66u + s);
    let a = grid_dot8(q.x & 511u, ksigns((q.x >> 9u) & 0x7fu), xu.lo[0], xu.lo[1])
          + grid_dot8((q.x >> 16u) & 511u, ksigns(q.x >> 25u), xu.lo[2], xu.lo[3]);
    let c = grid_dot8(q.y & 511u, ksigns((q.y >> 9u) & 0x7fu), xu.hi[0], xu.hi[1])
          + grid_dot8((q.y >> 16u) & 511u, ksigns(q.y >> 25u), xu.hi[2], xu.hi[3]);
    return w_f16(o) * 0.25 * ((0.5 + f32(sc & 0xfu)) * a + (0.5 + f32(sc >> 4u)) * c);
}
