// Copy the step's last real row (row0 + n_rows - 1, STEP_ROW0) of x [rows, cols] to out [cols]: prefill needs
// logits for that row only. Dispatch: ceil(cols / WG).

struct P {
    cols: u32,
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c < p.cols) {
        out[c] = x[(step[STEP_ROW0] + step[STEP_ROWS] - 1u) * p.cols + c];
    }
}
