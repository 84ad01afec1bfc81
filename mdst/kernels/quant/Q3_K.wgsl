// Q3_K: 256 weights in 110 bytes: 32 bytes of high bits hmask, 64 bytes of 2-bit q, 12 bytes
// of 6-bit scales (one per 16 weights), f16 d. Each 128 weights use 32 q bytes: quarter k of
// 32 weights takes bits 2k..2k+1 of q[l] and bit 4*half+k of hmask[l], l = weight mod 32.
// Scale s: low 4 bits are nibble s/8 of byte s%8, high 2 bits are bits 2*(s/4) of byte 8+s%4.
// w = d * (scale - 32) * (q - 4 * (1 - hbit)).
const QK: u32 = 256u;
const QB: u32 = 110u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let l = 4u * (g & 7u);
    let k = (g >> 3u) & 3u;       // quarter within the 128-weight half
    let half_ = g >> 5u;
    let s = g >> 2u;              // scale index
    let q = (u8x4(w_u32(b + 32u + 32u * half_ + l)) >> vec4<u32>(2u * k)) & vec4<u32>(3u);
    let h = (u8x4(w_u32(b + l)) >> vec4<u32>(4u * half_ + k)) & vec4<u32>(1u);
    let sc = ((w_u8(b + 96u + (s & 7u)) >> (4u * (s >> 3u))) & 0xfu)
           | (((w_u8(b + 104u + (s & 3u)) >> (2u * (s >> 2u))) & 3u) << 4u);
    return w_f16(b + 108u) * (f32(sc) - 32.0) * (vec4<f32>(q | (h << vec4<u32>(2u))) - 4.0);
}
