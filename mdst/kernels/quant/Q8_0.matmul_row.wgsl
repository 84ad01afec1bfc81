// matmul_row's step for Q8_0. A unit is half a block: 16 signed bytes (four words, read with five
// loads: blocks of 34 bytes start on even bytes) and the block's f16 scale (one load: an even
// offset never splits it). Two units a block, so neighbouring threads read neighbouring 16 bytes.
// The bytes become floats through f16 exponent bits (sb4) rather than integer-to-float conversions; with Q8
// (matmul_row.wgsl) they meet x's 8-bit copy in dot4I8Packed as they are.

const UNIT: u32 = 16u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = false;

struct XU {
    v: mat4x4<f32>,
    ss: f32,
    q: vec4<u32>,   // Q8: x as signed bytes
    d: f32,         // Q8: their block's scale
}

fn step_init(lid: u32) {}

fn step_x(u: u32) -> XU {
    var xu: XU;
    let G = 4u * u;
    if (Q8) {
        xu.q = vec4<u32>(q8_word(G), q8_word(G + 1u), q8_word(G + 2u), q8_word(G + 3u));
        xu.d = q8_scale(G);
        return xu;
    }
    xu.v = mat4x4<f32>(xg(G), xg(G + 1u), xg(G + 2u), xg(G + 3u));
    if (NORM) {
        xu.ss = sq(G) + sq(G + 1u) + sq(G + 2u) + sq(G + 3u);
    }
    return xu;
}

// The 4 bytes of v as signed integers, as floats: f16 1024 + (b ^ 0x80), less 1152.
fn sb4(v: u32) -> vec4<f32> {
    let a = unpack2x16float((v & 0x00ff00ffu) ^ 0x64806480u) - 1152.0;
    let b = unpack2x16float(((v >> 8u) & 0x00ff00ffu) ^ 0x64806480u) - 1152.0;
    return vec4<f32>(a.x, b.x, a.y, b.y);
}

// The unit's weights once for every row of x: with Q8 its 16 signed bytes, else as floats; and the scale.
struct WU {
    q: vec4<u32>,
    v: mat4x4<f32>,
    d: f32,
}

fn step_w(rb: u32, u: u32) -> WU {
    var w: WU;
    let b = rb + (u >> 1u) * QB;
    let o = b + 2u + 16u * (u & 1u);   // even
    let s = (o & 3u) * 8u;
    let i = o >> 2u;
    let c0 = W[i];
    let c1 = W[i + 1u];
    let c2 = W[i + 2u];
    let c3 = W[i + 3u];
    let c4 = W[i + 4u];
    let r = 31u - s;   // (c << 1) << r: c's bits moved up to follow a word shifted right by s; 0 when s = 0
    w.q = vec4<u32>((c0 >> s) | ((c1 << 1u) << r), (c1 >> s) | ((c2 << 1u) << r),
                    (c2 >> s) | ((c3 << 1u) << r), (c3 >> s) | ((c4 << 1u) << r));
    w.d = unpack2x16float(W[b >> 2u] >> ((b & 2u) * 8u)).x;
    if (!Q8) {
        w.v = mat4x4<f32>(sb4(w.q.x), sb4(w.q.y), sb4(w.q.z), sb4(w.q.w));
    }
    return w;
}

fn step_wx(w: WU, xu: XU) -> f32 {
    if (Q8) {
        return w.d * xu.d * f32(dot4I8Packed(w.q.x, xu.q.x) + dot4I8Packed(w.q.y, xu.q.y)
                                + dot4I8Packed(w.q.z, xu.q.z) + dot4I8Packed(w.q.w, xu.q.w));
    }
    return w.d * (dot(w.v[0], xu.v[0]) + dot(w.v[1], xu.v[1]) + dot(w.v[2], xu.v[2]) + dot(w.v[3], xu.v[3]));
}
