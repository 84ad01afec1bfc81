// The grid of a type in GRID_TYPES (composed before the type's quant file): llama.cpp's grid, 16 bits an
// entry (entry i at bits 16 * (i & 1) of word i >> 1; each weight a 2- or 3-bit level code), in a read-only
// storage buffer the host fills once (kernels.grid_words) and binds as group 1. A storage buffer is read
// through the cache by whichever lane needs an entry; a `var<private>` table is a copy per invocation.
@group(1) @binding(0) var<storage, read> GRID: array<u32>;

fn grid_entry(idx: u32) -> u32 {
    return (GRID[idx >> 1u] >> (16u * (idx & 1u))) & 0xffffu;
}

// IQ1_S and IQ1_M: weights 4h..4h+3 of grid entry idx (levels -1, 0, 1) plus delta (+-1/8 for each 8 weights).
fn iq1_levels(idx: u32, h: u32, delta: f32) -> vec4<f32> {
    let e = grid_entry(idx) >> (8u * h);
    return vec4<f32>((vec4<u32>(e) >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u)) - 1.0 + delta;
}

// The 8 weights of grid entry idx plus delta against x's groups xa, xb (the IQ1 types' GEMV steps).
fn iq1_dot8(idx: u32, delta: f32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    return dot(iq1_levels(idx, 0u, delta), xa) + dot(iq1_levels(idx, 1u, delta), xb);
}
