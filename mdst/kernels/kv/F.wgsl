// KV cache rows stored as `half` (f32, or f16 in the f16 variant): kv_dim values a row.
// Prepended, with the kernel's other modules, to kernels that read or write a layer's cache
// (kv_store, attention), which bind K at 1 and V at 2. See ../README.md.

@group(0) @binding(1) var<storage, read_write> kc: array<half>;   // [ring, kv_dim]
@group(0) @binding(2) var<storage, read_write> vc: array<half>;

const KVB: u32 = 4u;   // values written together

fn k_get(row: u32, i: u32, kv_dim: u32) -> f32 {
    return f32(kc[row * kv_dim + i]);
}

fn v_get(row: u32, i: u32, kv_dim: u32) -> f32 {
    return f32(vc[row * kv_dim + i]);
}

fn k_put(row: u32, blk: u32, kv_dim: u32, x: array<f32, KVB>) {
    for (var j = 0u; j < KVB; j++) {
        kc[row * kv_dim + blk * KVB + j] = half(x[j]);
    }
}

fn v_put(row: u32, blk: u32, kv_dim: u32, x: array<f32, KVB>) {
    for (var j = 0u; j < KVB; j++) {
        vc[row * kv_dim + blk * KVB + j] = half(x[j]);
    }
}
