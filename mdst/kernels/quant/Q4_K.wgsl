// Q4_K: 256 weights in 144 bytes: f16 d, f16 dmin, 12 bytes of packed 6-bit scales and mins
// for 8 sub-blocks of 32, then 128 bytes of nibbles. Each 64 weights use 32 bytes: the low
// nibbles are the first 32 weights, the high nibbles the next 32. w = d*sc*q - dmin*m.
// 144 is 9 words of 16 bytes: the header and 8 of data (weights_vec4.wgsl).
const QK: u32 = 256u;
const QB: u32 = 144u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let v = b >> 4u;              // the block's header word; its data words follow
    let s = g >> 3u;              // sub-block of 32
    let hd = W[v];
    let dm = unpack2x16float(hd.x);
    let sm = kq_scale_min(hd, s);
    let i = 8u * (g >> 4u) + (g & 7u);   // the data word, of 32
    let q = (u8x4(W[v + 1u + (i >> 2u)][i & 3u]) >> vec4<u32>(4u * (s & 1u))) & vec4<u32>(0xfu);
    return dm.x * sm.x * vec4<f32>(q) - dm.y * sm.y;
}
