// matmul_row's step for weight types without one of their own: a thread takes GPT groups of 4
// weights at a time through deq4 (GPT = 1: neighbouring threads read neighbouring bytes), striding
// over the row by TPR * GPT groups.

// One group of 4 weights: group gi of the blocks at bytes b (and bu, the up row's), x's group G.
fn group_dot(b: u32, bu: u32, gi: u32, G: u32) -> vec3<f32> {
    let xv = xg(G);
    var r = vec3<f32>(0.0);
    if (NORM) {
        r.z = sq(G);
    }
    r.x = dot(deq4(b, gi), xv);
    if (GLU != 0u) {
        r.y = dot(deq4(bu, gi), xv);
    }
    return r;
}

// Thread t's share of the row at byte `base` (and of the up row at `up`): (dot, up dot, x's sum of squares).
fn lane_dot(base: u32, up: u32, t: u32) -> vec3<f32> {
    var acc = vec3<f32>(0.0);
    let kg = p.k / 4u;           // groups of 4 weights in the row
    let gpb = QK / 4u;           // groups per block
    for (var c = t * GPT; c < kg; c += TPR * GPT) {
        if (gpb >= GPT && c + GPT <= kg) {
            // GPT groups of one block: its start computed once, and no bounds check between the
            // loads, so the compiler can issue them together (more bytes in flight per thread)
            let b = (c / gpb) * QB;
            for (var i = 0u; i < GPT; i++) {
                acc += group_dot(base + b, up + b, c % gpb + i, c + i);
            }
        } else {
            for (var i = 0u; i < GPT; i++) {
                let G = c + i;
                if (G < kg) {
                    let o = (G / gpb) * QB;
                    acc += group_dot(base + o, up + o, G % gpb, G);
                }
            }
        }
    }
    return acc;
}
