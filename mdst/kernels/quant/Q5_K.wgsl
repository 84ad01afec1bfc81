// Q5_K: 256 weights in 176 bytes: f16 d, f16 dmin, 12 bytes of packed 6-bit scales and mins
// (as Q4_K) for 8 sub-blocks of 32, 32 bytes of fifth bits qh, 128 bytes of nibbles (order as
// Q4_K). Bit s of qh[l] is the fifth bit of weight l of sub-block s. w = d*sc*q - dmin*m.
// 176 is 11 words of 16 bytes: the header, 2 of qh, 8 of nibbles (weights_vec4.wgsl).
const QK: u32 = 256u;
const QB: u32 = 176u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let v = b >> 4u;              // the block's header word
    let s = g >> 3u;              // sub-block of 32
    let hd = W[v];
    let dm = unpack2x16float(hd.x);
    let sm = kq_scale_min(hd, s);
    let i = 8u * (g >> 4u) + (g & 7u);   // the nibble word, of 32
    let j = g & 7u;                      // the qh word, of 8
    let lo = (u8x4(W[v + 3u + (i >> 2u)][i & 3u]) >> vec4<u32>(4u * (s & 1u))) & vec4<u32>(0xfu);
    let hi = (u8x4(W[v + 1u + (j >> 2u)][j & 3u]) >> vec4<u32>(s)) & vec4<u32>(1u);
    return dm.x * sm.x * vec4<f32>(lo | (hi << vec4<u32>(4u))) - dm.y * sm.y;
}
