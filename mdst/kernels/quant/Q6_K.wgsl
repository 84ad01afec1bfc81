// Q6_K: 256 weights in 210 bytes: 128 bytes of low nibbles ql, 64 bytes of 2-bit highs qh,
// 16 signed 8-bit scales (one per 16 weights), f16 d. Each 128 weights use 64 ql bytes and
// 32 qh bytes; within them, quarter k of 32 weights takes nibble k/2 of ql[l + 32*(k%2)]
// and bits 2k..2k+1 of qh[l]. w = d * scale * (q - 32).
const QK: u32 = 256u;
const QB: u32 = 210u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let half_ = g >> 5u;          // 128-weight half
    let k = (g >> 3u) & 3u;       // quarter within the half
    let l = 4u * (g & 7u);        // first of the 4 weights within the quarter
    let ql = (u8x4(w_u32(b + 64u * half_ + l + 32u * (k & 1u))) >> vec4<u32>(4u * (k >> 1u))) & vec4<u32>(0xfu);
    let qh = (u8x4(w_u32(b + 128u + 32u * half_ + l)) >> vec4<u32>(2u * k)) & vec4<u32>(3u);
    let sc = f32(bitcast<i32>(w_u8(b + 192u + 8u * half_ + l / 16u + 2u * k) << 24u) >> 24u);
    return w_f16(b + 208u) * sc * (vec4<f32>(ql | (qh << vec4<u32>(4u))) - 32.0);
}
