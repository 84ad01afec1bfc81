// matmul_row's step for TQ2_0. A unit is 32 weights, a quarter of one half of a block: the 2-bit codes at
// one shift of the half's 32 bytes, read in two reads (weights.wgsl's w_u32x4), and the block's d once.
const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

alias XU = X32;

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    return x32(u);
}

fn tq2_dot4(v: u32, sh: u32, x: vec4<f32>) -> f32 {
    return dot(vec4<f32>((u8x4(v) >> vec4<u32>(sh)) & vec4<u32>(3u)) - 1.0, x);
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    let o = b + (u >> 3u) * QB;
    let j = u & 7u;
    let p = o + 32u * (j >> 2u);
    let sh = 2u * (j & 3u);
    let a = w_u32x4(p);
    let c = w_u32x4(p + 16u);
    let d = tq2_dot4(a.x, sh, xu.lo[0]) + tq2_dot4(a.y, sh, xu.lo[1]) + tq2_dot4(a.z, sh, xu.lo[2])
          + tq2_dot4(a.w, sh, xu.lo[3]) + tq2_dot4(c.x, sh, xu.hi[0]) + tq2_dot4(c.y, sh, xu.hi[1])
          + tq2_dot4(c.z, sh, xu.hi[2]) + tq2_dot4(c.w, sh, xu.hi[3]);
    return w_f16(o + 64u) * d;
}
