// Mixture of experts: the slots' outputs summed, weighted by the router: y[r, o] = sum over j < used of
// route[r, j] * t[r, j, o] (route.wgsl's [used weights | used ids] a row), the slots in order.
// Dispatch: ceil(rows * n / WG) workgroups, spilling into y past 65535.

struct P {
    n: u32,      // outputs a row
    used: u32,
    rows: u32,
}

@group(0) @binding(0) var<storage, read> t: array<f32>;         // [rows, used, n]
@group(0) @binding(1) var<storage, read> route: array<f32>;     // [rows, 2 used]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [rows, n]
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_wg(wid, nwg) * WG + lid;
    if (i >= p.rows * p.n) {
        return;
    }
    let r = i / p.n;
    let o = i % p.n;
    var s = 0.0;
    for (var j = 0u; j < p.used; j++) {
        s += route[r * 2u * p.used + j] * t[(r * p.used + j) * p.n + o];
    }
    y[i] = s;
}
