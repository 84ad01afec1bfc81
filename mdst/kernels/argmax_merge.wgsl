// Greedy pick, second stage: the best of each row's per-part candidates (earlier part wins a
// tie), as a token id. Dispatch: ceil(rows / WG).

struct P {
    rows: u32,
    n_parts: u32,
}

@group(0) @binding(0) var<storage, read> best: array<vec2<u32>>;   // [rows, n_parts]
@group(0) @binding(1) var<storage, read_write> ids: array<u32>;    // [rows]
@group(0) @binding(2) var<uniform> p: P;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.rows) {
        return;
    }
    var b = best[r * p.n_parts];
    for (var i = 1u; i < p.n_parts; i++) {
        let c = best[r * p.n_parts + i];
        if (bitcast<f32>(c.x) > bitcast<f32>(b.x)) {
            b = c;
        }
    }
    ids[r] = b.y;
}
