// Greedy pick, second stage: the best of each row's per-slice candidates (the earlier slice wins
// a tie, and slices are in vocabulary order), as a token id. One workgroup per row.
// Dispatch: rows workgroups.

struct P {
    slices: u32,
}

@group(0) @binding(0) var<storage, read> best: array<vec2<u32>>;   // [rows, slices]
@group(0) @binding(1) var<storage, read_write> ids: array<u32>;    // [rows]
@group(0) @binding(2) var<uniform> p: P;

override WG: u32 = 64u;   // a power of two, at most PICK_WG

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.x;
    var v = -3.4e38;
    var at = NONE_ID;
    for (var i = lid; i < p.slices; i += WG) {
        let c = best[r * p.slices + i];
        if (at == NONE_ID || bitcast<f32>(c.x) > v) {
            v = bitcast<f32>(c.x);
            at = i;
        }
    }
    let b = pick_best(v, at, lid, WG);
    if (lid == 0u) {
        ids[r] = best[r * p.slices + b.i].y;
    }
}
