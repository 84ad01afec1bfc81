// Q4_K: 256 weights in 144 bytes: f16 d, f16 dmin, 12 bytes of packed 6-bit scales and mins
// for 8 sub-blocks of 32, then 128 bytes of nibbles. Each 64 weights use 32 bytes: the low
// nibbles are the first 32 weights, the high nibbles the next 32. w = d*sc*q - dmin*m.
const QK: u32 = 256u;
const QB: u32 = 144u;

// Scale and min of sub-block s (0..7), from the 12 packed bytes at byte o.
fn q4k_scale_min(o: u32, s: u32) -> vec2<f32> {
    if (s < 4u) {
        return vec2<f32>(f32(w_u8(o + s) & 63u), f32(w_u8(o + s + 4u) & 63u));
    }
    let a = w_u8(o + s + 4u);
    let sc = (a & 0xfu) | ((w_u8(o + s - 4u) >> 6u) << 4u);
    let m = (a >> 4u) | ((w_u8(o + s) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let chunk = g >> 4u;          // 64-weight chunk
    let hi = (g >> 3u) & 1u;      // upper 32 of the chunk
    let sm = q4k_scale_min(b + 4u, 2u * chunk + hi);
    let q = (u8x4(w_u32(b + 16u + 32u * chunk + 4u * (g & 7u))) >> vec4<u32>(4u * hi)) & vec4<u32>(0xfu);
    return w_f16(b) * sm.x * vec4<f32>(q) - w_f16(b + 2u) * sm.y;
}
