// IQ2_XXS: 256 weights in 66 bytes: f16 d, then 8 bytes for each 32 weights: a u32 of 4 grid indices
// (a byte each), a u32 of 4 sign indices (7 bits each, bits 7l..7l+6) and a 4-bit scale (bits 28..31).
// Grid entry idx is 8 weights, level 8, 25 or 43 each; the sign index gives their signs (weights.wgsl's
// ksigns). w = d * (0.5 + scale) / 4 * level * sign.
// 66-byte blocks start on even bytes: read through weights.wgsl's byte readers.
const QK: u32 = 256u;
const QB: u32 = 66u;

fn deq4(b: u32, g: u32) -> vec4<f32> {
    let o = b + 2u + 8u * (g >> 3u);
    let l = (g >> 1u) & 3u;
    let aux = w_u32x2(o);
    let idx = (aux.x >> (8u * l)) & 0xffu;
    let db = w_f16(b) * (0.5 + f32(aux.y >> 28u)) * 0.25;
    return db * signed4(grid4(2u * idx + (g & 1u)), ksigns((aux.y >> (7u * l)) & 0x7fu), g & 1u);
}
