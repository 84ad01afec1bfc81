// Attention with SPLIT, second stage: combine a (head, row)'s per-split partials (m, l, acc) into
// out = sum_z acc_z * exp(m_z - M) / sum_z l_z * exp(m_z - M), M the largest m_z of non-empty splits.
// Each split's weight is found once, in workgroup memory; then thread (group j, four dims c) sums the partial
// outputs of every ZG-th split from j up to the last non-empty one (splits past the query's position are
// empty), so a thread waits on a chain of splits / ZG loads, and the groups' sums meet in workgroup memory.
// Row r (its partials) is written to activation row row0 + r (STEP_ROW0).
// Dispatch: (heads, rows).

struct P {
    heads: u32,
    splits: u32,     // at most MAX_SPLITS
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> part: array<f32>;       // [rows, heads, splits, head_dim + 2]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [rows, heads * head_dim]
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 256u;
override HD: u32;               // head_dim: a multiple of 4, at most 4 * WG
override DV: u32 = HD / 4u;     // fours in a head
override ZG: u32 = WG / DV;     // groups of splits

const MAX_SPLITS: u32 = 256u;   // read by the host (plan.attention_splits)

var<workgroup> ms: array<f32, MAX_SPLITS>;   // split z's running max (-3e38 when empty)
var<workgroup> ls: array<f32, MAX_SPLITS>;   // its sum of weights
var<workgroup> ws: array<f32, MAX_SPLITS>;   // its weight exp(m_z - M), 0 when empty
var<workgroup> sums: array<vec4<f32>, WG>;   // [ZG, DV] the groups' weighted sums

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let r = wid.y;
    if (r >= step[STEP_ROWS]) {
        return;
    }
    let stride = HD + 2u;
    let base = (r * p.heads + h) * p.splits * stride;
    for (var z = lid; z < p.splits; z += WG) {
        let l = part[base + z * stride + 1u];
        ls[z] = l;
        ms[z] = select(-3.0e38, part[base + z * stride], l > 0.0);
    }
    workgroupBarrier();
    var big = -3.0e38;
    var nz = 0u;   // splits up to the last non-empty one
    for (var z = 0u; z < p.splits; z++) {
        big = max(big, ms[z]);
        if (ls[z] > 0.0) {
            nz = z + 1u;
        }
    }
    for (var z = lid; z < p.splits; z += WG) {
        ws[z] = select(0.0, exp(ms[z] - big), ls[z] > 0.0);
    }
    workgroupBarrier();
    var total = 0.0;
    for (var z = 0u; z < nz; z++) {
        total += ls[z] * ws[z];
    }
    let j = lid / DV;
    let c = lid % DV;
    var acc = vec4<f32>(0.0);
    if (j < ZG) {
        for (var z = j; z < nz; z += ZG) {
            let o = base + z * stride + 2u + 4u * c;
            acc += vec4<f32>(part[o], part[o + 1u], part[o + 2u], part[o + 3u]) * ws[z];
        }
    }
    sums[lid] = acc;
    workgroupBarrier();
    if (lid < DV) {
        var o = sums[lid];
        for (var g = 1u; g < ZG; g++) {
            o += sums[g * DV + lid];
        }
        let ob = ((step[STEP_ROW0] + r) * p.heads + h) * HD + 4u * lid;
        o /= total;
        out[ob] = o.x;
        out[ob + 1u] = o.y;
        out[ob + 2u] = o.z;
        out[ob + 3u] = o.w;
    }
}
