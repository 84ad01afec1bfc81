// Append the step's K and V rows ([rows, kv_dim], after RoPE) to a layer's cache at slot
// pos % ring, KVB values per invocation in the cache's storage format (kv/<type>.wgsl); padding
// rows are skipped so they never overwrite cached positions. Row r is activation row row0 + r (STEP_ROW0).
// POOL (a batched step): row r's position and pool slot come from the step's table (STEP_SEQS), and the
// cache bound is the whole pool, `stride` rows a slot.
// Dispatch: (ceil(kv_dim / KVB / WG), rows).

struct P {
    kv_dim: u32,     // kv heads * head_dim; a multiple of KVB
    ring: u32,       // cache slots: the context, or the window (plus a chunk) for sliding layers
    stride: u32,     // POOL: rows from one slot of the pool to the next
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<uniform> p: P;

override WG: u32 = 64u;
override POOL: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let blk = wid.x * WG + lid;
    let r = wid.y;
    if (blk >= p.kv_dim / KVB || r >= step[STEP_ROWS]) {
        return;
    }
    var pos = step[STEP_POS0] + r;
    var base = 0u;
    if (POOL) {
        pos = step[step[STEP_SEQS] + 2u * r];
        base = step[step[STEP_SEQS] + 2u * r + 1u] * p.stride;
    }
    let slot = base + pos % p.ring;
    let row = step[STEP_ROW0] + r;
    var kx: array<f32, KVB>;
    var vx: array<f32, KVB>;
    for (var j = 0u; j < KVB; j++) {
        kx[j] = k[row * p.kv_dim + blk * KVB + j];
        vx[j] = v[row * p.kv_dim + blk * KVB + j];
    }
    k_put(slot, blk, p.kv_dim, kx);
    v_put(slot, blk, p.kv_dim, vx);
}
