// matmul_row's step for Q5_K: Q4_K's (same units, header and scales) with each nibble's fifth bit
// from qh: bit s of qh byte l belongs to weight l of sub-block s, so a unit's 16 positions read the 4
// qh words of its half, bits 2 pr (low nibbles) and 2 pr + 1 (high nibbles). Header, nibbles and qh
// are one 16-byte load each (weights_vec4.wgsl).

const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

struct XU {
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
    sl: f32,
    sh: f32,
    ss: f32,
}

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    var xu: XU;
    let G = (u >> 3u) * 64u + ((u >> 1u) & 3u) * 16u + (u & 1u) * 4u;
    xu.lo = mat4x4<f32>(xg(G), xg(G + 1u), xg(G + 2u), xg(G + 3u));
    xu.hi = mat4x4<f32>(xg(G + 8u), xg(G + 9u), xg(G + 10u), xg(G + 11u));
    xu.sl = hsum(xu.lo[0] + xu.lo[1] + xu.lo[2] + xu.lo[3]);
    xu.sh = hsum(xu.hi[0] + xu.hi[1] + xu.hi[2] + xu.hi[3]);
    if (NORM) {
        xu.ss = sq(G) + sq(G + 1u) + sq(G + 2u) + sq(G + 3u) + sq(G + 8u) + sq(G + 9u) + sq(G + 10u) + sq(G + 11u);
    }
    return xu;
}

// One data word's 8 weights (5 bits each) against x: its low nibbles with qh bit s0, high with s0 + 1.
fn q5k_word(v: u32, qh: u32, s0: u32, xl: vec4<f32>, xh: vec4<f32>) -> vec2<f32> {
    let m = 0x0f0f0f0fu;
    let one = 0x01010101u;
    return vec2<f32>(dot(ub4((v & m) | (((qh >> s0) & one) << 4u)), xl),
                     dot(ub4(((v >> 4u) & m) | (((qh >> (s0 + 1u)) & one) << 4u)), xh));
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
    let d = q5k_word(q.x, e.x, s0, xu.lo[0], xu.hi[0]) + q5k_word(q.y, e.y, s0, xu.lo[1], xu.hi[1])
          + q5k_word(q.z, e.z, s0, xu.lo[2], xu.hi[2]) + q5k_word(q.w, e.w, s0, xu.lo[3], xu.hi[3]);
    return dm.x * (sm.x * d.x + sm.y * d.y) - dm.y * (sm.z * xu.sl + sm.w * xu.sh);
}
