// Gated linear unit: out = act(gate) * up over n floats (ACT 0: SiLU, 1: GELU with the tanh
// approximation). Dispatch: ceil(n / WG) workgroups, spilling into y past 65535.

struct P {
    n: u32,
}

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 64u;
override ACT: u32 = 0u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_wg(wid, nwg) * WG + lid;
    if (i >= p.n) {
        return;
    }
    let g = gate[i];
    var a: f32;
    if (ACT == 0u) {
        a = g / (1.0 + exp(-g));
    } else {
        // tanh's argument is clamped: some drivers compute tanh through exp and overflow.
        let t = clamp(0.7978845608028654 * (g + 0.044715 * g * g * g), -15.0, 15.0);
        a = 0.5 * g * (1.0 + tanh(t));
    }
    out[i] = a * up[i];
}
