// Q4_1: 32 weights in 20 bytes: f16 scale d, f16 offset m, 16 bytes of 4-bit q
// (nibble order as Q4_0); w = d * q + m. 20 is a multiple of 4, so blocks are read as words.
const QK: u32 = 32u;
const QB: u32 = 20u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let w = b >> 2u;
    let dm = unpack2x16float(W[w]);
    let q = (u8x4(W[w + 1u + (g & 3u)]) >> vec4<u32>((g >> 2u) * 4u)) & vec4<u32>(0xfu);
    return dm.x * vec4<f32>(q) + dm.y;
}
