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

// The draw buffer (`draw`, array<u32>) of a sampled step, written by the host with the step
// (mdst.sampling.Draw.encode): settings as f32/u32 words, then the distinct recent tokens and
// their counts for the repetition penalties.
const DRAW_TEMPERATURE: u32 = 0u;
const DRAW_TOP_P: u32 = 1u;
const DRAW_MIN_P: u32 = 2u;
const DRAW_U: u32 = 3u;
const DRAW_TOP_K: u32 = 4u;
const DRAW_N_HIST: u32 = 5u;
const DRAW_REPEAT: u32 = 6u;
const DRAW_PRESENCE: u32 = 7u;
const DRAW_FREQUENCY: u32 = 8u;
const DRAW_HIST: u32 = 16u;
const DRAW_COUNTS: u32 = 80u;
const KMAX: u32 = 64u;   // the most candidates GPU sampling keeps (top_k)
