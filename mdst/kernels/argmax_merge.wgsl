// Greedy pick, second stage: the best of each row's per-slice candidates (the earlier slice wins
// a tie, and slices are in vocabulary order), as a token id. One workgroup per row.
// Dispatch: rows workgroups.

struct P {
    slices: u32,
}

@group(0) @binding(0) var<storage, read> best: array<vec2<u32>>;   // [rows, slices]
@group(0) @binding(1) var<storage, read_write> ids: array<u32>;    // [rows]
@group(0) @binding(2) var<uniform> p: P;

override WG: u32 = 64u;

var<workgroup> bv: array<f32, WG>;
var<workgroup> bi: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.x;
    var v = -3.4e38;
    var at = 0xffffffffu;
    for (var i = lid; i < p.slices; i += WG) {
        let c = best[r * p.slices + i];
        if (at == 0xffffffffu || bitcast<f32>(c.x) > v) {
            v = bitcast<f32>(c.x);
            at = i;
        }
    }
    bv[lid] = v;
    bi[lid] = at;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s && bi[lid + s] != 0xffffffffu) {
            if (bi[lid] == 0xffffffffu || bv[lid + s] > bv[lid] || (bv[lid + s] == bv[lid] && bi[lid + s] < bi[lid])) {
                bv[lid] = bv[lid + s];
                bi[lid] = bi[lid + s];
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        ids[r] = best[r * p.slices + bi[0]].y;
    }
}
