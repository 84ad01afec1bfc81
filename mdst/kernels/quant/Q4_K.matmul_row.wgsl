// matmul_row's step for Q4_K. A thread takes 32 weights at a time: 4 data words of a sub-block
// pair, whose low nibbles are 16 weights of the pair's first sub-block and whose high nibbles are
// the same 16 positions of the second. The block's scales are decoded once per 32 weights (the
// generic step does it per 4) and the 4 words are loaded together. Units of 32 run 8 to a block;
// thread t takes units t, t + TPR, ...

// sum_i q_i x_i over one data word v: its low nibbles against xl, its high nibbles against xh.
fn q4k_word(v: u32, xl: vec4<f32>, xh: vec4<f32>) -> vec2<f32> {
    let q = vec4<u32>(v) >> vec4<u32>(0u, 8u, 16u, 24u);
    return vec2<f32>(dot(vec4<f32>(q & vec4<u32>(0xfu)), xl), dot(vec4<f32>((q >> vec4<u32>(4u)) & vec4<u32>(0xfu)), xh));
}

// One unit: pair pr (0..3), half h (0, 1) of the block at byte b; xl, xh: the x values of its
// low and high nibbles (4 columns of 4).
fn q4k_unit(b: u32, pr: u32, h: u32, xl: mat4x4<f32>, xh: mat4x4<f32>) -> f32 {
    let w = b >> 2u;
    let dm = unpack2x16float(W[w]);
    let lo = q4k_scale_min(w, 2u * pr);
    let hi = q4k_scale_min(w, 2u * pr + 1u);
    let q = w + 4u + 8u * pr + 4u * h;
    let d = q4k_word(W[q], xl[0], xh[0]) + q4k_word(W[q + 1u], xl[1], xh[1])
          + q4k_word(W[q + 2u], xl[2], xh[2]) + q4k_word(W[q + 3u], xl[3], xh[3]);
    let one = vec4<f32>(1.0);
    let sl = dot(xl[0] + xl[1] + xl[2] + xl[3], one);
    let sh = dot(xh[0] + xh[1] + xh[2] + xh[3], one);
    return dm.x * (lo.x * d.x + hi.x * d.y) - dm.y * (lo.y * sl + hi.y * sh);
}

// Thread t's share of the row at byte `base` (and of the up row at `up`): (dot, up dot, x's sum of squares).
fn lane_dot(base: u32, up: u32, t: u32) -> vec3<f32> {
    var acc = vec3<f32>(0.0);
    for (var u = t; u < p.k / 32u; u += TPR) {
        let blk = u >> 3u;
        let pr = (u >> 1u) & 3u;
        let h = u & 1u;
        let G = blk * 64u + pr * 16u + h * 4u;   // x's group (of 4) at the unit's first low nibble
        let xu = x_unit(G, vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(8u, 9u, 10u, 11u));   // low, high nibbles
        acc.z += xu.ss;
        acc.x += q4k_unit(base + blk * QB, pr, h, xu.a, xu.b);
        if (GLU != 0u) {
            acc.y += q4k_unit(up + blk * QB, pr, h, xu.a, xu.b);
        }
    }
    return acc;
}
