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
    // byte s%4 of scale words 0 and 1; sub-blocks 4..7 add word 2 and use these as high bits
    let sh = 8u * (s & 3u);
    let a = (hd.yz >> vec2<u32>(sh)) & vec2<u32>(0xffu);
    var sm = a & vec2<u32>(63u);
    if (s >= 4u) {
        let c = (hd.w >> sh) & 0xffu;
        sm = vec2<u32>(c & 0xfu, c >> 4u) | ((a >> vec2<u32>(6u)) << vec2<u32>(4u));
    }
    let i = 8u * (g >> 4u) + (g & 7u);   // the nibble word, of 32
    let j = g & 7u;                      // the qh word, of 8
    let lo = (u8x4(W[v + 3u + (i >> 2u)][i & 3u]) >> vec4<u32>(4u * (s & 1u))) & vec4<u32>(0xfu);
    let hi = (u8x4(W[v + 1u + (j >> 2u)][j & 3u]) >> vec4<u32>(s)) & vec4<u32>(1u);
    return dm.x * f32(sm.x) * vec4<f32>(lo | (hi << vec4<u32>(4u))) - dm.y * f32(sm.y);
}
