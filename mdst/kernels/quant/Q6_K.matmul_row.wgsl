// matmul_row's step for Q6_K. A thread takes 32 weights at a time: 8 consecutive positions l of
// a 128-weight half, in each of its four quarters (ql's low and high nibbles of bytes l and
// l + 32, with bits 0-1, 2-3, 4-5, 6-7 of qh[l]). That is two words of ql, two more 32 bytes on,
// and two of qh, read with three loads each (blocks of 210 bytes start on even bytes), and one
// pair of words for the 4 scales: once per 32 weights where the generic step reads d and a scale
// per 4. Units run 8 to a block (2 halves x 4 runs of 8); thread t takes units t, t + TPR, ...

// The four quarters' sums q * x over one word each of ql (lo: byte l, hi: byte l + 32) and qh;
// q unsigned (0..63). x1..x4: x at the quarters' positions.
fn q6k_word(lo: u32, hi: u32, qh: u32, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>) -> vec4<f32> {
    let s = vec4<u32>(0u, 8u, 16u, 24u);
    let l = vec4<u32>(lo) >> s;
    let h = vec4<u32>(hi) >> s;
    let q = vec4<u32>(qh) >> s;
    let m = vec4<u32>(0xfu);
    let t = vec4<u32>(3u);
    let f = vec4<u32>(4u);
    return vec4<f32>(dot(vec4<f32>((l & m) | ((q & t) << f)), x1),
                     dot(vec4<f32>((h & m) | (((q >> vec4<u32>(2u)) & t) << f)), x2),
                     dot(vec4<f32>(((l >> f) & m) | (((q >> f) & t) << f)), x3),
                     dot(vec4<f32>(((h >> f) & m) | (((q >> vec4<u32>(6u)) & t) << f)), x4));
}

// One unit: half n, positions l0 .. l0 + 7 of the block at byte b. Column r of xa (xb) holds x
// at quarter r's first (second) 4 positions.
fn q6k_unit(b: u32, n: u32, l0: u32, xa: mat4x4<f32>, xb: mat4x4<f32>) -> f32 {
    let lo = w_u32x2(b + 64u * n + l0);
    let hi = w_u32x2(b + 64u * n + l0 + 32u);
    let qh = w_u32x2(b + 128u + 32u * n + l0);
    let sw = w_u32x2(b + 192u + 8u * n);      // the half's 8 scales; this run's are bytes i, i+2, i+4, i+6
    let i = 8u * (l0 >> 4u);
    let sb = vec4<u32>(sw.x >> i, sw.x >> (i + 16u), sw.y >> i, sw.y >> (i + 16u));
    let sc = vec4<f32>(bitcast<vec4<i32>>(sb << vec4<u32>(24u)) >> vec4<u32>(24u));
    let d = q6k_word(lo.x, hi.x, qh.x, xa[0], xa[1], xa[2], xa[3])
          + q6k_word(lo.y, hi.y, qh.y, xb[0], xb[1], xb[2], xb[3]);
    let one = vec4<f32>(1.0);
    let sx = vec4<f32>(dot(xa[0] + xb[0], one), dot(xa[1] + xb[1], one), dot(xa[2] + xb[2], one),
                       dot(xa[3] + xb[3], one));
    return w_f16(b + 208u) * dot(sc, d - 32.0 * sx);
}

// Thread t's share of the row at byte `base` (and of the up row at `up`): (dot, up dot, x's sum of squares).
fn lane_dot(base: u32, up: u32, t: u32) -> vec3<f32> {
    var acc = vec3<f32>(0.0);
    for (var u = t; u < p.k / 32u; u += TPR) {
        let blk = u >> 3u;
        let n = (u >> 2u) & 1u;
        let l0 = 8u * (u & 3u);
        let G = blk * 64u + n * 32u + l0 / 4u;   // x's group (of 4) at quarter 0's first position
        let xu = x_unit(G, vec4<u32>(0u, 8u, 16u, 24u), vec4<u32>(1u, 9u, 17u, 25u));   // quarters' first, second 4
        acc.z += xu.ss;
        acc.x += q6k_unit(base + blk * QB, n, l0, xu.a, xu.b);
        if (GLU != 0u) {
            acc.y += q6k_unit(up + blk * QB, n, l0, xu.a, xu.b);
        }
    }
    return acc;
}
