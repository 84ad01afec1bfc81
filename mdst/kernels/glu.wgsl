// Gated linear unit: out = act(gate) * up over n floats (ACT 1: SiLU, 2: GELU with the tanh
// approximation; see `activate`). Dispatch: ceil(n / WG) workgroups, spilling into y past 65535.

struct P {
    n: u32,
}

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 64u;
override ACT: u32 = 1u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_wg(wid, nwg) * WG + lid;
    if (i >= p.n) {
        return;
    }
    out[i] = activate(ACT, gate[i]) * up[i];
}
