// Mixture of experts: the (row, slot) entries of a route (route.wgsl's [used weights | used ids] a row) grouped
// by expert, for matmul_rows' EXPERTS mode: y = [n_expert + 1 starts | the entries r used + j, expert by
// expert], as floats (exact below 2^24, like the route's ids). A counting sort in one workgroup: the counts
// through workgroup atomics, their running sum, then each entry placed through its expert's atomic cursor
// (the order within an expert varies from run to run; no output depends on it).
// Dispatch: 1.

struct P {
    n_expert: u32,   // at most MAX_EXPERTS
    used: u32,       // experts a row
    rows: u32,
}

@group(0) @binding(0) var<storage, read> route: array<f32>;     // [rows, 2 used]
@group(0) @binding(1) var<storage, read_write> y: array<f32>;   // [n_expert + 1 + rows used]
@group(0) @binding(2) var<uniform> p: P;

override WG: u32 = 256u;

const MAX_EXPERTS: u32 = 512u;   // read by the host (plan.GROUP_MAX_EXPERTS)

var<workgroup> cursor: array<atomic<u32>, MAX_EXPERTS>;   // counts, then each expert's next free place

// The expert of entry i (row i / used, slot i % used).
fn expert_of(i: u32) -> u32 {
    return u32(route[(i / p.used) * 2u * p.used + p.used + i % p.used]);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let n = p.rows * p.used;
    for (var e = lid; e < p.n_expert; e += WG) {
        atomicStore(&cursor[e], 0u);
    }
    workgroupBarrier();
    for (var i = lid; i < n; i += WG) {
        atomicAdd(&cursor[expert_of(i)], 1u);
    }
    workgroupBarrier();
    if (lid == 0u) {
        var s = 0u;
        for (var e = 0u; e < p.n_expert; e++) {
            let c = atomicLoad(&cursor[e]);
            atomicStore(&cursor[e], s);
            y[e] = f32(s);
            s += c;
        }
        y[p.n_expert] = f32(s);
    }
    workgroupBarrier();
    for (var i = lid; i < n; i += WG) {
        y[p.n_expert + 1u + atomicAdd(&cursor[expert_of(i)], 1u)] = f32(i);
    }
}
