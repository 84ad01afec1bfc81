// Append the step's K and V rows ([rows, kv_dim], after RoPE) to a layer's cache at slot
// pos % ring; padding rows are skipped so they never overwrite cached positions.
// Dispatch: (ceil(kv_dim / WG), rows).

struct P {
    kv_dim: u32,     // kv heads * head_dim
    ring: u32,       // cache slots: the context, or the window (plus a chunk) for sliding layers
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> kc: array<half>;   // [ring, kv_dim]
@group(0) @binding(4) var<storage, read_write> vc: array<half>;   // [ring, kv_dim]
@group(0) @binding(5) var<uniform> p: P;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x * WG + lid;
    let r = wid.y;
    if (i >= p.kv_dim || r >= step[STEP_ROWS]) {
        return;
    }
    let slot = (step[STEP_POS0] + r) % p.ring;
    kc[slot * p.kv_dim + i] = half(k[r * p.kv_dim + i]);
    vc[slot * p.kv_dim + i] = half(v[r * p.kv_dim + i]);
}
