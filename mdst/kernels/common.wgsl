// Shared by every kernel (prepended by the loader; see README.md).

// The precision line. The f16 variant rewrites it to `alias half = f16;` and adds `enable f16;`.
// `half` is the storage type of the KV cache and of other tensors kept at reduced precision.
alias half = f32;

// Workgroups beyond 65535 in x spill into y; this gives the flat index.
fn flat_wg(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// The per-step buffer (`step`, array<u32>) holds [pos0, n_rows, 0, 0, token ids...] and is
// written once per step. pos0 is the position of the step's first row; rows at and past
// n_rows are padding of a plan compiled for more rows.
const STEP_POS0: u32 = 0u;
const STEP_ROWS: u32 = 1u;
const STEP_TOKENS: u32 = 4u;
