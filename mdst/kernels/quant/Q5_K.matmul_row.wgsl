// matmul_row's step for Q5_K: Q4_K's (same units, header and scales) with each nibble's fifth bit
// from qh: bit s of qh byte l belongs to weight l of sub-block s, so a unit's 16 positions read the 4
// qh words of its half, bits 2 pr (low nibbles) and 2 pr + 1 (high nibbles). Header, nibbles and qh
// are one 16-byte load each (weights_vec4.wgsl). With Q8 (matmul_row.wgsl), as Q4_K's: the 5-bit values stay
// bytes and meet x's 8-bit copy in dot4I8Packed.

const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

alias XU = XK;

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    return xk(u);
}

// One data word's 8 weights (5 bits each, 0..31) as two words of bytes: its low nibbles with qh bit s0, its
// high ones with s0 + 1.
fn q5k_bytes(v: u32, qh: u32, s0: u32) -> vec2<u32> {
    let m = 0x0f0f0f0fu;
    let one = 0x01010101u;
    return vec2<u32>((v & m) | (((qh >> s0) & one) << 4u), ((v >> 4u) & m) | (((qh >> (s0 + 1u)) & one) << 4u));
}

// Those against x: as floats, or (Q8) against x's signed bytes.
fn q5k_word(v: u32, qh: u32, s0: u32, xl: vec4<f32>, xh: vec4<f32>) -> vec2<f32> {
    let q = q5k_bytes(v, qh, s0);
    return vec2<f32>(dot(ub4(q.x), xl), dot(ub4(q.y), xh));
}

fn q5k_iword(v: u32, qh: u32, s0: u32, xl: u32, xh: u32) -> vec2<i32> {
    let q = q5k_bytes(v, qh, s0);
    return vec2<i32>(dot4I8Packed(q.x, xl), dot4I8Packed(q.y, xh));
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    let v = (b >> 4u) + (u >> 3u) * (QB / 16u);   // the block's header word
    let pr = (u >> 1u) & 3u;
    let h = u & 1u;
    let hd = W[v];
    let q = W[v + 3u + 2u * pr + h];   // the unit's 16 bytes of nibbles
    let e = W[v + 1u + h];             // and of fifth bits
    let s0 = 2u * pr;
    let dm = unpack2x16float(hd.x);
    let sm = ub4(kq_scales(hd, pr));
    var d: vec2<f32>;
    if (Q8) {
        let i = q5k_iword(q.x, e.x, s0, xu.ql.x, xu.qh.x) + q5k_iword(q.y, e.y, s0, xu.ql.y, xu.qh.y)
              + q5k_iword(q.z, e.z, s0, xu.ql.z, xu.qh.z) + q5k_iword(q.w, e.w, s0, xu.ql.w, xu.qh.w);
        d = vec2<f32>(xu.dl, xu.dh) * vec2<f32>(i);
    } else {
        d = q5k_word(q.x, e.x, s0, xu.lo[0], xu.hi[0]) + q5k_word(q.y, e.y, s0, xu.lo[1], xu.hi[1])
          + q5k_word(q.z, e.z, s0, xu.lo[2], xu.hi[2]) + q5k_word(q.w, e.w, s0, xu.lo[3], xu.hi[3]);
    }
    return dm.x * (sm.x * d.x + sm.y * d.y) - dm.y * (sm.z * xu.sl + sm.w * xu.sh);
}
