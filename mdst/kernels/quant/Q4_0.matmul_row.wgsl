// matmul_row's step for Q4_0. A unit is half a block: bytes 8h .. 8h + 7 of its 16 (two words, read
// with three loads: blocks of 18 bytes start on even bytes), whose low nibbles are weights 8h ..
// 8h + 7 and high nibbles weights 16 + 8h .. 16 + 8h + 7, and the block's f16 scale (one load). Two
// units a block. Nibbles become floats through exponent bits (nib_lo, nib_hi); the offset of 8 is
// taken once per unit from the sum of its x. With Q8 (matmul_row.wgsl) the nibbles stay bytes and meet x's
// 8-bit copy in dot4I8Packed (a unit lies in one block of x's).

const UNIT: u32 = 16u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

struct XU {
    lo: mat2x4<f32>,
    hi: mat2x4<f32>,
    sx: f32,
    ss: f32,
    ql: vec2<u32>,   // Q8: x at the low and high nibbles as signed bytes
    qh: vec2<u32>,
    isx: i32,        // Q8: their sum
    d: f32,          // Q8: their block's scale
}

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    var xu: XU;
    let G = (u >> 1u) * 8u + 2u * (u & 1u);
    if (Q8) {
        xu.ql = vec2<u32>(q8_word(G), q8_word(G + 1u));
        xu.qh = vec2<u32>(q8_word(G + 4u), q8_word(G + 5u));
        xu.isx = q8_sum(xu.ql.x) + q8_sum(xu.ql.y) + q8_sum(xu.qh.x) + q8_sum(xu.qh.y);
        xu.d = q8_scale(G);
        return xu;
    }
    xu.lo = mat2x4<f32>(xg(G), xg(G + 1u));
    xu.hi = mat2x4<f32>(xg(G + 4u), xg(G + 5u));
    xu.sx = hsum(xu.lo[0] + xu.lo[1] + xu.hi[0] + xu.hi[1]);
    if (NORM) {
        xu.ss = sq(G) + sq(G + 1u) + sq(G + 4u) + sq(G + 5u);
    }
    return xu;
}

fn step_dot(rb: u32, u: u32, xu: XU) -> f32 {
    let b = rb + (u >> 1u) * QB;
    let q = w_u32x2(b + 2u + 8u * (u & 1u));
    let d = unpack2x16float(W[b >> 2u] >> ((b & 2u) * 8u)).x;
    if (Q8) {
        let m = 0x0f0f0f0fu;
        let i = dot4I8Packed(q.x & m, xu.ql.x) + dot4I8Packed(q.y & m, xu.ql.y)
              + dot4I8Packed((q.x >> 4u) & m, xu.qh.x) + dot4I8Packed((q.y >> 4u) & m, xu.qh.y);
        return d * xu.d * f32(i - 8 * xu.isx);
    }
    let s = dot(nib_lo(q.x), xu.lo[0]) + dot(nib_lo(q.y), xu.lo[1]) + dot(nib_hi(q.x), xu.hi[0]) + dot(nib_hi(q.y), xu.hi[1]);
    return d * (s - 8.0 * xu.sx);
}
