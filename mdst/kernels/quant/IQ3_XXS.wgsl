// IQ3_XXS: 256 weights in 98 bytes: f16 d, 64 bytes of grid indices (byte i: weights 4i..4i+3), then a u32
// for each 32 weights: 4 sign indices (7 bits each, bits 7l..7l+6, for 8 weights each; weights.wgsl's
// ksigns) and a 4-bit scale (bits 28..31). Grid entries are 4 levels of 4, 12, 20, ..., 52, 62.
// w = d * (0.5 + scale) / 2 * level * sign.
// 98-byte blocks start on even bytes: read through weights.wgsl's byte readers.
const QK: u32 = 256u;
const QB: u32 = 98u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let level = grid4(w_u8(b + 2u + g));
    let aux = w_u32(b + 66u + 4u * (g >> 3u));
    let l = (g >> 1u) & 3u;
    return w_f16(b) * (0.5 + f32(aux >> 28u)) * 0.5 * signed4(level, ksigns((aux >> (7u * l)) & 0x7fu), g & 1u);
}
