// matmul_row's step for TQ1_0. A unit is 32 weights, an eighth of each of the block's three parts (quant/TQ1_0.wgsl),
// for unit i of a block: word i of the 32 five-digit bytes (20 weights, 32 n + 4 i + j), bytes 2 i and 2 i + 1 of
// the 16 five-digit bytes (10 weights, 160 + 16 n + 2 i + j) and digits 2 (i & 1), 2 (i & 1) + 1 of four-digit byte
// i / 2 (2 weights, 240 + 4 n + i / 2). So every unit reads the same: a word (w_u32), a half word, a byte and d, five
// loads (54-byte blocks start on even bytes: the half word and d each lie in one word).
// A byte's digits come from a table in workgroup memory (4 KiB, filled by the workgroup first): per byte value its
// weights w = digit - 1 as f16 pairs (digits 0-1, 2-3, 4), one load for five weights where the base-3 extraction
// costs about five instructions a weight. x is read once a unit into registers laid out by byte (column j: x at
// byte j's digits 0..3, digit 4 apart). With Q8 it reads the 8-bit copy through xg, as the grid types do: a byte's
// five weights lie in five blocks of x's, so dot4I8Packed would first need the digits regrouped by block.
const UNIT: u32 = 32u;   // weights a unit (read by the host: plan.GEMV_UNIT)
const STEP_SYNC: bool = true;

var<workgroup> tq1_lut: array<vec4<u32>, 256>;

struct XU {
    a: mat4x4<f32>,   // column j: x at digits 0..3 of the unit's five-digit byte j of the first part
    a4: vec4<f32>,    // component j: x at its digit 4
    b: mat2x4<f32>,   // the same for the unit's two bytes of the second part
    b4: vec2<f32>,
    h: vec2<f32>,     // x at the unit's two digits of the four-digit byte
    ss: f32,
}

// Digit n of byte e (llama.cpp's fixed point: e holds its digits as a fraction in base 3) minus 1, p = 3^n.
fn tq1_weight(e: u32, p: u32) -> f32 {
    return f32((((e * p) & 0xffu) * 3u) >> 8u) - 1.0;
}

fn step_init(lid: u32) {
    for (var e = lid; e < 256u; e += WG) {
        tq1_lut[e] = vec4<u32>(pack2x16float(vec2<f32>(tq1_weight(e, 1u), tq1_weight(e, 3u))),
                               pack2x16float(vec2<f32>(tq1_weight(e, 9u), tq1_weight(e, 27u))),
                               pack2x16float(vec2<f32>(tq1_weight(e, 81u), 0.0)), 0u);
    }
}

// x's group G and, with NORM, its sum of squares over the components `keep` selects (1.0 or 0.0 each).
fn tq1_x(G: u32, keep: vec4<f32>, ss: ptr<function, f32>) -> vec4<f32> {
    if (NORM) {
        let v = x[xo + G];
        *ss += dot(v * v, keep);
    }
    return xg(G);
}

fn step_x(u: u32) -> XU {
    var xu: XU;
    var ss = 0.0;
    let G = (u >> 3u) * 64u;   // the block's first group of x
    let i = u & 7u;
    let every = vec4<f32>(1.0);
    // first part: digit n of byte word i is group 8 n + i
    let a0 = tq1_x(G + i, every, &ss);
    let a1 = tq1_x(G + 8u + i, every, &ss);
    let a2 = tq1_x(G + 16u + i, every, &ss);
    let a3 = tq1_x(G + 24u + i, every, &ss);
    xu.a = transpose(mat4x4<f32>(a0, a1, a2, a3));
    xu.a4 = tq1_x(G + 32u + i, every, &ss);
    // second part: digit n of bytes 2 i, 2 i + 1 is half i & 1 of group 40 + 4 n + i / 2
    let hi = (i & 1u) == 1u;
    let pair = select(vec4<f32>(1.0, 1.0, 0.0, 0.0), vec4<f32>(0.0, 0.0, 1.0, 1.0), hi);
    let G1 = G + 40u + (i >> 1u);
    let b0 = tq1_x(G1, pair, &ss);
    let b1 = tq1_x(G1 + 4u, pair, &ss);
    let b2 = tq1_x(G1 + 8u, pair, &ss);
    let b3 = tq1_x(G1 + 12u, pair, &ss);
    let b4 = tq1_x(G1 + 16u, pair, &ss);
    let t = transpose(mat4x4<f32>(b0, b1, b2, b3));
    xu.b = mat2x4<f32>(select(t[0], t[2], hi), select(t[1], t[3], hi));
    xu.b4 = select(b4.xy, b4.zw, hi);
    // third part: digit n of byte i / 2 is component i / 2 of group 60 + n
    let c = i >> 1u;
    let one = select(vec4<f32>(0.0), vec4<f32>(1.0), vec4<u32>(c) == vec4<u32>(0u, 1u, 2u, 3u));
    let G2 = G + 60u + 2u * (i & 1u);
    xu.h = vec2<f32>(tq1_x(G2, one, &ss)[c], tq1_x(G2 + 1u, one, &ss)[c]);
    xu.ss = ss;
    return xu;
}

// The five weights of byte e against x at its digits 0..3 (xa) and 4 (x4).
fn tq1_dot5(e: u32, xa: vec4<f32>, x4: f32) -> f32 {
    let w = tq1_lut[e];
    return dot(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), xa) + unpack2x16float(w.z).x * x4;
}

fn step_dot(b: u32, u: u32, xu: XU) -> f32 {
    let o = b + (u >> 3u) * QB;
    let i = u & 7u;
    let q = w_u32(o + 4u * i);   // first part: bytes 4 i .. 4 i + 3
    // second part: bytes 2 i, 2 i + 1 in the low 16 bits (o is even: 16 bits at an even byte lie in one word)
    let r = W[(o + 32u + 2u * i) >> 2u] >> (((o + 2u * i) & 2u) * 8u);
    let h = w_u8(o + 48u + (i >> 1u));   // third part: byte i / 2
    let d = tq1_dot5(q & 0xffu, xu.a[0], xu.a4.x) + tq1_dot5((q >> 8u) & 0xffu, xu.a[1], xu.a4.y)
          + tq1_dot5((q >> 16u) & 0xffu, xu.a[2], xu.a4.z) + tq1_dot5(q >> 24u, xu.a[3], xu.a4.w)
          + tq1_dot5(r & 0xffu, xu.b[0], xu.b4.x) + tq1_dot5((r >> 8u) & 0xffu, xu.b[1], xu.b4.y)
          + dot(unpack2x16float(tq1_lut[h][i & 1u]), xu.h);
    return unpack2x16float(W[(o + 52u) >> 2u] >> ((o & 2u) * 8u)).x * d;
}
