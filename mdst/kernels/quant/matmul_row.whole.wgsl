// matmul_row's split of a step that reads and decodes a unit in one piece (step_dot(b, u, xu)): composed after
// any step that defines no step_w. The weights it holds for every row of x are where the unit is; each row
// of x reads and decodes them again (from cache).
struct WU {
    b: u32,
    u: u32,
}

fn step_w(b: u32, u: u32) -> WU {
    return WU(b, u);
}

fn step_wx(w: WU, xu: XU) -> f32 {
    return step_dot(w.b, w.u, xu);
}
