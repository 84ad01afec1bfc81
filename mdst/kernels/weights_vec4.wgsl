// Weight access for the types whose blocks are whole 16-byte words (WIDE_TYPES in __init__.py): binding 0
// read as vec4<u32>, so a block's header and each 16 bytes of its data are one load rather than four.
// Offsets stay in bytes; every block, row and part starts on a 16-byte boundary.

@group(0) @binding(0) var<storage, read> W: array<vec4<u32>>;
