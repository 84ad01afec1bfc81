// KV cache rows stored as `half` (f32, or f16 in the f16 variant): kv_dim values a row.
// Prepended, with the kernel's other modules, to kernels that read or write a layer's cache
// (kv_store, rope_store, attention), which bind K at 1 and V at 2. See ../README.md.

// Bound as fours (kv_dim is a multiple of 4) so that a read or a write of four values is one access.
@group(0) @binding(1) var<storage, read_write> kc: array<vec4<half>>;   // [ring, kv_dim / 4]
@group(0) @binding(2) var<storage, read_write> vc: array<vec4<half>>;

const KVB: u32 = 4u;   // values written together

// Values i .. i + 3 of a cached row (i a multiple of 4).
fn k_get4(row: u32, i: u32, kv_dim: u32) -> vec4<f32> {
    return vec4<f32>(kc[(row * kv_dim + i) / 4u]);
}

fn v_get4(row: u32, i: u32, kv_dim: u32) -> vec4<f32> {
    return vec4<f32>(vc[(row * kv_dim + i) / 4u]);
}

fn k_put(row: u32, blk: u32, kv_dim: u32, x: array<f32, KVB>) {
    kc[row * kv_dim / 4u + blk] = vec4<half>(vec4<f32>(x[0], x[1], x[2], x[3]));
}

fn v_put(row: u32, blk: u32, kv_dim: u32, x: array<f32, KVB>) {
    vc[row * kv_dim / 4u + blk] = vec4<half>(vec4<f32>(x[0], x[1], x[2], x[3]));
}
