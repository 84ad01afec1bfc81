// matmul_row's step for MXFP4. A unit is one block of 32 weights (x32 in matmul_row.wgsl): its exponent
// byte once and its 16 bytes of codes in one read (weights.wgsl's w_u32x4), word i holding weights
// 4i .. 4i + 3 in its low nibbles and 16 + 4i .. in its high ones.
const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

alias XU = X32;

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    return x32(u);
}

fn mxfp4_dot8(v: u32, xl: vec4<f32>, xh: vec4<f32>) -> f32 {
    let q = u8x4(v);
    return dot(levels16(MXFP4_LEVELS, q & vec4<u32>(0xfu)), xl) + dot(levels16(MXFP4_LEVELS, q >> vec4<u32>(4u)), xh);
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    let o = b + u * QB;
    let v = w_u32x4(o + 1u);
    let d = mxfp4_dot8(v.x, xu.lo[0], xu.hi[0]) + mxfp4_dot8(v.y, xu.lo[1], xu.hi[1])
          + mxfp4_dot8(v.z, xu.lo[2], xu.hi[2]) + mxfp4_dot8(v.w, xu.lo[3], xu.hi[3]);
    return ldexp(1.0, i32(w_u8(o)) - 128) * d;
}
