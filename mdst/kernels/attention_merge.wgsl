// Attention with SPLIT, second stage: combine a (head, row)'s per-split partials (m, l, acc) into
// out = sum_z acc_z * exp(m_z - M) / sum_z l_z * exp(m_z - M), M the largest m_z of non-empty splits.
// Latency is what counts here (a few MB at most), so no thread walks all the splits: M and the last non-empty
// split come from a tree over split-threads, each split's weight is found once in workgroup memory, then
// thread (group j, four dims c) sums the partials of every ZG-th split from j up to the last non-empty one
// (splits past the query's position are empty), and a tree sums the groups. A head's dims are cut into DQ
// parts, a workgroup each, so that each group's chain of split loads is DQ times shorter.
// Row r (its partials) is written to activation row row0 + r (STEP_ROW0).
// Dispatch: (heads, rows, DQ).

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
override DQ: u32 = 1u;          // workgroups a head: divides HD / 4 (plan.merge_launch)
override DV: u32 = HD / 4u / DQ;   // fours a workgroup writes
override ZG: u32 = WG / DV;     // groups of splits

const MAX_SPLITS: u32 = 256u;   // read by the host (plan.attention_splits)

var<workgroup> ms: array<f32, MAX_SPLITS>;   // split z's running max (-3e38 when empty)
var<workgroup> ls: array<f32, MAX_SPLITS>;   // its sum of weights l_z, then l_z exp(m_z - M)
var<workgroup> ws: array<f32, MAX_SPLITS>;   // its weight exp(m_z - M), 0 when empty
var<workgroup> top: array<vec2<f32>, WG>;    // the tree's (largest m, splits up to the last non-empty one)
var<workgroup> sums: array<vec4<f32>, WG>;   // [ZG, DV] the groups' weighted sums
var<workgroup> tots: array<f32, WG>;         // [ZG, DV] the groups' sums of weights (alike across c)

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let r = wid.y;
    if (r >= step[STEP_ROWS]) {
        return;
    }
    let stride = HD + 2u;
    let base = (r * p.heads + h) * p.splits * stride;
    var t = vec2<f32>(-3.0e38, 0.0);
    for (var z = lid; z < p.splits; z += WG) {
        let l = part[base + z * stride + 1u];
        let m = select(-3.0e38, part[base + z * stride], l > 0.0);
        ms[z] = m;
        ls[z] = l;
        t = vec2<f32>(max(t.x, m), select(t.y, f32(z + 1u), l > 0.0));
    }
    top[lid] = t;
    workgroupBarrier();
    // a tree over the split-threads only: from half the power of two that covers the splits
    for (var s = min(WG / 2u, 1u << firstLeadingBit(max(p.splits, 2u) - 1u)); s > 0u; s >>= 1u) {
        if (lid < s) {
            top[lid] = max(top[lid], top[lid + s]);
        }
        workgroupBarrier();
    }
    let big = top[0].x;
    let nz = u32(top[0].y);
    for (var z = lid; z < nz; z += WG) {   // the splits this thread loaded
        let w = select(0.0, exp(ms[z] - big), ls[z] > 0.0);
        ws[z] = w;
        ls[z] *= w;
    }
    workgroupBarrier();
    let j = lid / DV;
    let c = lid % DV;
    let d0 = 4u * (wid.z * DV + c);   // this thread's first dim
    var acc = vec4<f32>(0.0);
    var tot = 0.0;
    if (j < ZG) {
        for (var z = j; z < nz; z += ZG) {
            let o = base + z * stride + 2u + d0;
            acc += vec4<f32>(part[o], part[o + 1u], part[o + 2u], part[o + 3u]) * ws[z];
            tot += ls[z];
        }
    }
    sums[lid] = acc;
    tots[lid] = tot;
    workgroupBarrier();
    for (var s = 1u; s < ZG; s <<= 1u) {   // group j takes group j + s, for j a multiple of 2s
        if (j % (2u * s) == 0u && j + s < ZG) {
            sums[lid] += sums[lid + s * DV];
            tots[lid] += tots[lid + s * DV];
        }
        workgroupBarrier();
    }
    if (lid < DV) {
        let o = sums[lid] / tots[lid];
        let ob = ((step[STEP_ROW0] + r) * p.heads + h) * HD + d0;
        out[ob] = o.x;
        out[ob + 1u] = o.y;
        out[ob + 2u] = o.z;
        out[ob + 3u] = o.w;
    }
}
