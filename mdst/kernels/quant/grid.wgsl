// The grid of a type in GRID_TYPES (composed before the type's quant file): llama.cpp's grid, a byte a
// weight (an entry of 8 weights is words 2i, 2i + 1; one of 4 is word i; IQ1's levels -1, 0, 1 stored as
// 0, 1, 2), in a read-only storage buffer the host fills once (kernels.grid_words) and binds as group 1. A
// storage buffer is read through the cache by whichever lane needs an entry (a `var<private>` table is a copy
// per invocation), and level bytes become floats through exponent bits (ub4) with no unpacking of codes.
@group(1) @binding(0) var<storage, read> GRID: array<u32>;

// The 4 levels in word w of the grid.
fn grid4(w: u32) -> vec4<f32> {
    return ub4(GRID[w]);
}

// The 8 weights of entry idx of an 8-weight grid with signs s (bit j set: weight j negative) against x's
// groups xa, xb (the IQ2 types' GEMV steps).
fn grid_dot8(idx: u32, s: u32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    return dot(signed4(grid4(2u * idx), s, 0u), xa) + dot(signed4(grid4(2u * idx + 1u), s, 1u), xb);
}

// IQ1_S and IQ1_M: weights 4h..4h+3 of grid entry idx (levels -1, 0, 1) plus delta (+-1/8 for each 8 weights).
fn iq1_levels(idx: u32, h: u32, delta: f32) -> vec4<f32> {
    return grid4(2u * idx + h) + (delta - 1.0);
}

// The 8 weights of grid entry idx plus delta against x's groups xa, xb (the IQ1 types' GEMV steps).
fn iq1_dot8(idx: u32, delta: f32, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    return dot(grid4(2u * idx), xa) + dot(grid4(2u * idx + 1u), xb) + (delta - 1.0) * dot(xa + xb, vec4<f32>(1.0));
}
