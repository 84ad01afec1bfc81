// matmul_row's step for Q4_0. A unit is half a block: bytes 8h .. 8h + 7 of its 16 (two words, read
// with three loads: blocks of 18 bytes start on even bytes), whose low nibbles are weights 8h ..
// 8h + 7 and high nibbles weights 16 + 8h .. 16 + 8h + 7, and the block's f16 scale (one load). Two
// units a block. Nibbles become floats through exponent bits (nib_lo, nib_hi); the offset of 8 is
// taken once per unit from the sum of its x.

const UNIT: u32 = 16u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

struct XU {
    lo: mat2x4<f32>,
    hi: mat2x4<f32>,
    sx: f32,
    ss: f32,
}

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    var xu: XU;
    let G = (u >> 1u) * 8u + 2u * (u & 1u);
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
    let s = dot(nib_lo(q.x), xu.lo[0]) + dot(nib_lo(q.y), xu.lo[1]) + dot(nib_hi(q.x), xu.hi[0]) + dot(nib_hi(q.y), xu.hi[1]);
    return d * (s - 8.0 * xu.sx);
}
