// Q2_K: 256 weights in 84 bytes: 16 scale bytes (one per 16 weights: low nibble scale, high
// nibble min), 64 bytes of 2-bit q, f16 d, f16 dmin. Each 128 weights use 32 q bytes: quarter k
// of 32 weights takes bits 2k..2k+1 of those bytes. w = d*sc*q - dmin*m.
// 84 is a multiple of 4, so every block is 4-byte aligned and is read as whole words.
const QK: u32 = 256u;
const QB: u32 = 84u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let w = b >> 2u;
    let dm = unpack2x16float(W[w + 20u]);
    let s = (W[w + (g >> 4u)] >> (8u * ((g >> 2u) & 3u))) & 0xffu;  // scale byte g/4
    let q = (u8x4(W[w + 4u + 8u * (g >> 5u) + (g & 7u)]) >> vec4<u32>(2u * ((g >> 3u) & 3u))) & vec4<u32>(3u);
    return dm.x * f32(s & 0xfu) * vec4<f32>(q) - dm.y * f32(s >> 4u);
}
