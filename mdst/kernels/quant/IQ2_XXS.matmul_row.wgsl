// matmul_row's step for IQ2_XXS. A unit is one sub-block of 32 weights (x32 in matmul_row.wgsl): its 8
// bytes (4 grid indices, then 4 sign indices and the scale in one word) are read once for its 4 grid
// entries, where the generic step reads them and the block's d again for every 4 weights.
const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

alias XU = X32;

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    return x32(u);
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    let o = b + (u >> 3u) * QB;
    let q = w_u32x2(o + 2u + 8u * (u & 7u));
    let s = grid_dot8(q.x & 0xffu, ksigns(q.y & 0x7fu), xu.lo[0], xu.lo[1])
          + grid_dot8((q.x >> 8u) & 0xffu, ksigns((q.y >> 7u) & 0x7fu), xu.lo[2], xu.lo[3])
          + grid_dot8((q.x >> 16u) & 0xffu, ksigns((q.y >> 14u) & 0x7fu), xu.hi[0], xu.hi[1])
          + grid_dot8(q.x >> 24u, ksigns((q.y >> 21u) & 0x7fu), xu.hi[2], xu.hi[3]);
    return w_f16(o) * (0.5 + f32(q.y >> 28u)) * 0.25 * s;
}
