// IQ4_NL: 32 weights in 18 bytes: f16 d, 16 bytes of 4-bit indices (nibble order as Q4_0) into
// a fixed table of 16 signed levels; w = d * level[q].
const QK: u32 = 32u;
const QB: u32 = 18u;

// The 16 levels as signed bytes, 4 a word (a vector: dynamic indexing needs no memory).
const IQ4_LEVELS = vec4<u32>(0xbfad9881u, 0xf6eaddcfu, 0x26190d01u, 0x71594535u);

fn iq4_levels(q: vec4<u32>) -> vec4<f32> {
    let v = vec4<u32>(IQ4_LEVELS[q.x >> 2u], IQ4_LEVELS[q.y >> 2u], IQ4_LEVELS[q.z >> 2u], IQ4_LEVELS[q.w >> 2u]);
    return vec4<f32>(bitcast<vec4<i32>>(v << (vec4<u32>(24u) - 8u * (q & vec4<u32>(3u)))) >> vec4<u32>(24u));
}

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let q = (u8x4(w_u32(b + 2u + (g & 3u) * 4u)) >> vec4<u32>((g >> 2u) * 4u)) & vec4<u32>(0xfu);
    return w_f16(b) * iq4_levels(q);
}
