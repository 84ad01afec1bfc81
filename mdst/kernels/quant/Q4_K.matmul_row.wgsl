// matmul_row's step for Q4_K. A unit is 32 weights: 4 data words of a sub-block pair, whose low
// nibbles are 16 weights of the pair's first sub-block and whose high nibbles the same 16 positions
// of the second. Units run 8 to a block (4 pairs x 2 halves). The unit's x and their sums are read
// once for all the group's rows; per row, a unit is two 16-byte loads (weights_vec4.wgsl): its data and
// the block's header, which gives the two sub-blocks' scales and mins (decoded as one word of 4 bytes),
// and the nibbles become floats through exponent bits (ub4 in matmul_row.wgsl) rather than
// integer-to-float conversions. With Q8 (matmul_row.wgsl) the nibbles stay bytes and meet x's 8-bit copy in
// dot4I8Packed; the mins take the x blocks' sums.

const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

alias XU = XK;

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    return xk(u);
}

// The unit's weights once for every row of x: with Q8 its 16 bytes of nibbles, else the nibbles as floats.
struct WU {
    v: vec4<u32>,
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
    dm: vec2<f32>,   // the block's scale and min scale
    sm: vec4<f32>,   // the sub-blocks' scale lo, scale hi, min lo, min hi
}

fn step_w(b: u32, u: u32) -> WU {
    var w: WU;
    let h = (b >> 4u) + (u >> 3u) * (QB / 16u);   // the block's header word
    let pr = (u >> 1u) & 3u;
    let hd = W[h];
    w.v = W[h + 1u + 2u * pr + (u & 1u)];
    w.dm = unpack2x16float(hd.x);
    w.sm = ub4(kq_scales(hd, pr));
    if (!Q8) {
        w.lo = mat4x4<f32>(nib_lo(w.v.x), nib_lo(w.v.y), nib_lo(w.v.z), nib_lo(w.v.w));
        w.hi = mat4x4<f32>(nib_hi(w.v.x), nib_hi(w.v.y), nib_hi(w.v.z), nib_hi(w.v.w));
    }
    return w;
}

fn step_wx(w: WU, xu: XU) -> f32 {
    var dl: f32;
    var dh: f32;
    if (Q8) {
        // the nibbles as bytes 0..15 against x's signed bytes, four products an instruction
        let m = 0x0f0f0f0fu;
        let v = w.v;
        dl = xu.dl * f32(dot4I8Packed(v.x & m, xu.ql.x) + dot4I8Packed(v.y & m, xu.ql.y)
                         + dot4I8Packed(v.z & m, xu.ql.z) + dot4I8Packed(v.w & m, xu.ql.w));
        dh = xu.dh * f32(dot4I8Packed((v.x >> 4u) & m, xu.qh.x) + dot4I8Packed((v.y >> 4u) & m, xu.qh.y)
                         + dot4I8Packed((v.z >> 4u) & m, xu.qh.z) + dot4I8Packed((v.w >> 4u) & m, xu.qh.w));
    } else {
        dl = dot(w.lo[0], xu.lo[0]) + dot(w.lo[1], xu.lo[1]) + dot(w.lo[2], xu.lo[2]) + dot(w.lo[3], xu.lo[3]);
        dh = dot(w.hi[0], xu.hi[0]) + dot(w.hi[1], xu.hi[1]) + dot(w.hi[2], xu.hi[2]) + dot(w.hi[3], xu.hi[3]);
    }
    let sm = w.sm;
    return w.dm.x * (sm.x * dl + sm.y * dh) - w.dm.y * (sm.z * xu.sl + sm.w * xu.sh);
}
