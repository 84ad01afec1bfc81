// matmul_row's step for Q6_K. A unit is 32 weights: 8 consecutive positions l of a 128-weight half,
// in each of its four quarters (ql's low and high nibbles of bytes l and l + 32, with bits 0-1, 2-3,
// 4-5, 6-7 of qh[l]). That is two words of ql, two more 32 bytes on, and two of qh, read with three
// loads each (blocks of 210 bytes start on even bytes), and two words for the 4 scales. Units run 8 to
// a block (2 halves x 4 runs of 8). The 6-bit values are assembled 4 at a time in a word and become
// floats through exponent bits (ub4), as do the 4 signed scales. With Q8 (matmul_row.wgsl) the 6-bit values
// stay bytes and meet x's 8-bit copy in dot4I8Packed, each quarter being one block of x's.

const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

struct XU {
    a: mat4x4<f32>,    // column r: x at quarter r's first 4 positions
    b: mat4x4<f32>,    // column r: x at its second 4
    sx: vec4<f32>,     // each quarter's sum of x (for the offset of 32)
    ss: f32,
    qa: vec4<u32>,     // Q8: a and b as signed bytes, a word a quarter
    qb: vec4<u32>,
    isx: vec4<i32>,    // Q8: each quarter's sum of those bytes
    dx: vec4<f32>,     // Q8: each quarter's block scale
}

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    var xu: XU;
    let G = (u >> 3u) * 64u + ((u >> 2u) & 1u) * 32u + 2u * (u & 3u);   // x's group at quarter 0's first position
    if (Q8) {
        xu.qa = vec4<u32>(q8_word(G), q8_word(G + 8u), q8_word(G + 16u), q8_word(G + 24u));
        xu.qb = vec4<u32>(q8_word(G + 1u), q8_word(G + 9u), q8_word(G + 17u), q8_word(G + 25u));
        xu.isx = vec4<i32>(q8_sum(xu.qa.x) + q8_sum(xu.qb.x), q8_sum(xu.qa.y) + q8_sum(xu.qb.y),
                           q8_sum(xu.qa.z) + q8_sum(xu.qb.z), q8_sum(xu.qa.w) + q8_sum(xu.qb.w));
        xu.dx = vec4<f32>(q8_scale(G), q8_scale(G + 8u), q8_scale(G + 16u), q8_scale(G + 24u));
        return xu;
    }
    xu.a = mat4x4<f32>(xg(G), xg(G + 8u), xg(G + 16u), xg(G + 24u));
    xu.b = mat4x4<f32>(xg(G + 1u), xg(G + 9u), xg(G + 17u), xg(G + 25u));
    xu.sx = vec4<f32>(hsum(xu.a[0] + xu.b[0]), hsum(xu.a[1] + xu.b[1]), hsum(xu.a[2] + xu.b[2]), hsum(xu.a[3] + xu.b[3]));
    if (NORM) {
        xu.ss = sq(G) + sq(G + 8u) + sq(G + 16u) + sq(G + 24u) + sq(G + 1u) + sq(G + 9u) + sq(G + 17u) + sq(G + 25u);
    }
    return xu;
}

// f16 at an even byte offset (never split across words).
fn q6k_f16(o: u32) -> f32 {
    return unpack2x16float(W[o >> 2u] >> ((o & 2u) * 8u)).x;
}

// The four quarters' q (unsigned, 0..63) over one word each of ql (lo: byte l, hi: byte l + 32) and qh,
// assembled 4 bytes a word.
fn q6k_bytes(lo: u32, hi: u32, qh: u32) -> vec4<u32> {
    let m = 0x0f0f0f0fu;
    let t = 0x30303030u;
    return vec4<u32>((lo & m) | ((qh << 4u) & t), (hi & m) | ((qh << 2u) & t),
                     ((lo >> 4u) & m) | (qh & t), ((hi >> 4u) & m) | ((qh >> 2u) & t));
}

// The same against x's signed bytes (Q8), four products an instruction.
fn q6k_iword(q: vec4<u32>, xs: vec4<u32>) -> vec4<i32> {
    return vec4<i32>(dot4I8Packed(q.x, xs.x), dot4I8Packed(q.y, xs.y), dot4I8Packed(q.z, xs.z), dot4I8Packed(q.w, xs.w));
}

// The unit's weights once for every row of x: the quarters' 6-bit values as bytes with Q8, else as floats
// (column r: quarter r's first 4, then its second 4), the quarters' scales and the block's.
struct WU {
    qa: vec4<u32>,
    qb: vec4<u32>,
    a: mat4x4<f32>,
    b: mat4x4<f32>,
    sc: vec4<f32>,
    d: f32,
}

fn step_w(rb: u32, u: u32) -> WU {
    var w: WU;
    let b = rb + (u >> 3u) * QB;
    let n = (u >> 2u) & 1u;
    let l0 = 8u * (u & 3u);
    let lo = w_u32x2(b + 64u * n + l0);
    let hi = w_u32x2(b + 64u * n + l0 + 32u);
    let qh = w_u32x2(b + 128u + 32u * n + l0);
    // the half's 8 scales; quarter r's is byte l0 / 16 + 2 r: bytes i, i + 2 of sw.x, then of sw.y
    let sw = w_u32x2(b + 192u + 8u * n);
    let i = 8u * (l0 >> 4u);
    let sb = ((sw.x >> i) & 0x00ff00ffu) | (((sw.y >> i) & 0x00ff00ffu) << 8u);   // quarters 0, 2, 1, 3
    w.sc = (ub4(sb ^ 0x80808080u) - 128.0).xzyw;
    w.qa = q6k_bytes(lo.x, hi.x, qh.x);
    w.qb = q6k_bytes(lo.y, hi.y, qh.y);
    w.d = q6k_f16(b + 208u);
    if (!Q8) {
        w.a = mat4x4<f32>(ub4(w.qa.x), ub4(w.qa.y), ub4(w.qa.z), ub4(w.qa.w));
        w.b = mat4x4<f32>(ub4(w.qb.x), ub4(w.qb.y), ub4(w.qb.z), ub4(w.qb.w));
    }
    return w;
}

fn step_wx(w: WU, xu: XU) -> f32 {
    if (Q8) {
        let iq = q6k_iword(w.qa, xu.qa) + q6k_iword(w.qb, xu.qb) - 32 * xu.isx;
        return w.d * dot(w.sc, xu.dx * vec4<f32>(iq));
    }
    // quarter r: its 8 values (columns r of a and b) against x's
    let d = vec4<f32>(dot(w.a[0], xu.a[0]) + dot(w.b[0], xu.b[0]), dot(w.a[1], xu.a[1]) + dot(w.b[1], xu.b[1]),
                      dot(w.a[2], xu.a[2]) + dot(w.b[2], xu.b[2]), dot(w.a[3], xu.a[3]) + dot(w.b[3], xu.b[3]));
    return w.d * dot(w.sc, d - 32.0 * xu.sx);
}
